"""log p(x) with the aggregate-posterior mixture as the prior: the decoder kept, p(z) replaced by a Gaussian
mixture fit to the training set's codes (the noise-variance study's table 3, "Approx. Agg. Posterior" rows).

The mixture is fit on training points only, so p_mix(x) = E_{p_mix(z)} p(x|z) is a model in its own right
and its IWAE_k bound on test points is as honest as the prior's. Both bounds use the same guide draws
(common random numbers), so their difference has a small standard error. Two fits are scored: to the
posterior means (what the aggregate sampler draws from) and to one draw of q(z|x) per point; a unit the
model does not use has means near 0 but draws spread like the prior, and the means-mixture, far narrower
than q(z|x) there, scores those draws badly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn

from ppvae import registry, tables
from ppvae.analyses.base import Analysis, Result, RunContext
from ppvae.evaluation.loglik import log_likelihood
from ppvae.evaluation.sampling import base_of
from ppvae.registry import Param
from ppvae.sites import LATENT, upper_local_latents

FITS = ("means", "draws")


class SwapPrior(Messenger):
    """Score the model's ``z`` site under ``prior`` (broadcast to the site's batch shape) instead of its own p(z)."""

    def __init__(self, prior: dist.Distribution):
        super().__init__()
        self.prior = prior

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == LATENT:
            msg["fn"] = self.prior.expand(msg["fn"].batch_shape)


class WithPrior(nn.Module):
    """``model`` with p(z) replaced: a module, so evaluation mode reaches the model inside."""

    def __init__(self, model: Callable, prior: dist.Distribution):
        super().__init__()
        self.model, self.prior = model, prior

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        with SwapPrior(self.prior):
            return self.model(x, y)


@registry.register("analysis", "mixture_prior", unconditional=True)
class MixturePrior(Analysis):
    """test_ll_mixture_prior_{means,draws}: IWAE_k of log p(x) with p(z) replaced by a Gaussian mixture fit
    to the training codes, beside test_ll_own_prior on the same draws, and the gains with paired s.e."""

    title = "The aggregate-posterior mixture as the prior"

    def __init__(self, *,
                 k: Annotated[int, Param(">= 1", "importance samples per test point (the source's table 3: 20)")] = 20,
                 components: Annotated[int, Param(">= 1", "Gaussian mixture components (the source: 32 on "
                                                          "MNIST)")] = 32):
        self.k, self.components = k, components

    def run(self, ctx: RunContext) -> Result:
        data, model, guide, x = ctx.data, ctx.model, ctx.guide, ctx.test_x
        trace = poutine.trace(guide).get_trace(x[:2])
        if upper_local_latents(trace):
            return Result(report="Not computed: with a second stochastic layer p(z) is conditional, not a prior "
                                 "a mixture could replace.")
        if isinstance(base_of(trace.nodes[LATENT]["fn"]), dist.Delta):
            return Result(report="Not computed: a point-mass guide gives no importance-sampling bound.")
        def iwae(m: Callable) -> torch.Tensor:
            pyro.set_rng_seed(ctx.seed + 1)  # the evaluation's seed: the draws of test_ll_k{k} (eval.extra_k)
            return log_likelihood(m, guide, x, k=self.k)["ll"].double()

        own = iwae(model)
        metrics: dict = {"mixture_prior_k": self.k, "mixture_prior_components": self.components,
                         "test_ll_own_prior": own.mean().item()}
        for fit in FITS:
            ll = iwae(WithPrior(model, ctx.aggregate_mixture(self.components, fit)))
            gain = ll - own
            metrics[f"test_ll_mixture_prior_{fit}"] = ll.mean().item()
            metrics[f"mixture_prior_gain_{fit}"] = gain.mean().item()
            metrics[f"mixture_prior_gain_{fit}_se"] = (gain.std() / math.sqrt(len(gain))).item() if len(x) > 1 else 0.
        report = tables.records([metrics], ["test_ll_own_prior", "test_ll_mixture_prior_means",
                                            "test_ll_mixture_prior_draws", "mixture_prior_gain_means",
                                            "mixture_prior_gain_means_se", "mixture_prior_gain_draws",
                                            "mixture_prior_gain_draws_se"]) + (
            f"\nIWAE k = {self.k} on {len(x)} test points, the same guide draws under each prior (the "
            f"evaluation's: test_ll_own_prior is test_ll_k{self.k} where eval.extra_k has it); the "
            f"{self.components}-component mixtures are fit to the {data.train_x.shape[0]} training points' "
            "posterior means (the aggregate sampler's) and to one draw of q(z|x) each.\n")
        return Result(metrics, report=report)


__all__ = ["MixturePrior", "SwapPrior", "WithPrior"]
