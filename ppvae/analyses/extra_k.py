"""Further IWAE bounds on the same test points, e.g. the k = 20 bound beside k = 5000."""

from __future__ import annotations

from typing import Annotated

import pyro

from ppvae import registry
from ppvae.analyses.base import Analysis, Result, RunContext
from ppvae.evaluation.loglik import log_likelihood
from ppvae.registry import Param


@registry.register("analysis", "extra_k")
class ExtraK(Analysis):
    """Further IWAE bounds test_ll_k{K} on the evaluation's test points (e.g. ks = [20])."""

    def __init__(self, *, ks: Annotated[tuple[int, ...], Param(">= 1", "importance samples of each bound",
                                                              length=(1, None))] = (20,)):
        self.ks = ks

    def run(self, ctx: RunContext) -> Result:
        metrics = {}
        for k in self.ks:
            pyro.set_rng_seed(ctx.seed + 1)  # the evaluation's seed: the same sample tiles as test_ll
            ll = log_likelihood(ctx.model, ctx.guide, ctx.test_x, ctx.test_y, k=k)["ll"]
            metrics[f"test_ll_k{k}"] = ll.mean().item()
        return Result(metrics)
