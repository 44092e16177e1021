"""Test log-likelihoods under draws of the decoder weights: the posterior predictive of a Bayesian decoder.

For a pair with global latent sites (a Bayesian decoder's weights), each of S draws W_s from
the guide is held fixed in model and guide, so every row of the S x N matrix is an ordinary
IWAE bound of a fixed decoder; ``logmeanexp`` over rows estimates the posterior predictive
log p(x_n | data). A pair without global sites gives rows that differ only by the importance
samples, so point and Bayesian decoders compare on the same footing. Across a study's runs,
ArviZ's PSIS-LOO ``compare`` reads the matrices as pointwise log-likelihoods.

``metrics.json``'s own test_nll draws the weights once per tile of 32 importance samples; the
matrix here holds each draw fixed over all k samples, so its predictive estimate has the most
draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae import plots, registry, runs, tables
from ppvae.analyses.base import Analysis, Result, RunContext, StudyRun
from ppvae.evaluation import diagnostics
from ppvae.infer.importance import iwae_bound, log_weights
from ppvae.registry import Param
from ppvae.sites import OBSERVED, batch_like, decode_mean, is_latent, is_local, model_site, posterior_mean

MATRIX = "weight_loglik.npz"  # the S x N matrix of one run


@torch.no_grad()
def weight_draws(guide: Callable, x: torch.Tensor, draws: int) -> list[dict[str, torch.Tensor]]:
    """``draws`` independent draws of every global (weight) site from the guide.

    The values are copies: the guide's link remembers its latest draw by identity, and a model
    handed that very tensor would replace it by local-reparameterization noise instead of
    decoding with the fixed weights.
    """
    out = []
    for _ in range(draws):
        tr = poutine.trace(guide).get_trace(x[:1])
        out.append({name: site["value"].clone() for name, site in tr.nodes.items()
                    if is_latent(site) and not is_local(site)})
    return out


@torch.no_grad()
def pointwise_log_likelihood(model: Callable, guide: Callable, x: torch.Tensor, *, draws: int, k: int,
                             chunk: int = 100) -> torch.Tensor:
    """``[draws, N]``: log p(x_n | W_s) by IWAE_k over z, for weights W_s drawn from the guide (global sites
    held at each draw in both model and guide)."""
    rows = []
    for w in weight_draws(guide, x, draws):
        m, g = poutine.condition(model, data=w), poutine.condition(guide, data=w)
        rows.append(torch.cat([_iwae(m, g, x[i:i + chunk], k) for i in range(0, x.shape[0], chunk)]))
    return torch.stack(rows)


def _iwae(model: Callable, guide: Callable, x: torch.Tensor, k: int, k_chunk: int = 500) -> torch.Tensor:
    total = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    for start in range(0, k, k_chunk):
        n = min(k_chunk, k - start)
        total = torch.logaddexp(total, iwae_bound(log_weights(model, guide, x, k=n)) + math.log(n))
    return total - math.log(k)


@torch.no_grad()
def decode_weight_draws(model: Callable, guide: Callable, z: torch.Tensor, x_template: torch.Tensor,
                        draws: int) -> torch.Tensor:
    """``[draws, n, D]``: the mean image E[x | z, W_s] of each z under ``draws`` guide weight draws."""
    x = batch_like(x_template, z.shape[0])
    return torch.stack([model_site(model, OBSERVED, z, x, fixed=w).mean for w in weight_draws(guide, x, draws)])


def weight_draw_figure(model: Callable, guide: Callable, x: torch.Tensor, image_shape: tuple[int, ...], path: Path,
                       draws: int = 6) -> Path:
    """One z per column (the guide's posterior mean of a test image), decoded with the mean weights and
    several weight draws; last row: per-pixel sd over 50 draws (scaled to the row's maximum)."""
    z = posterior_mean(guide, x)
    sampled = decode_weight_draws(model, guide, z, x, draws=50)
    sd = sampled.std(0)
    rows = [x, decode_mean(model, z, x), *sampled[:draws], sd / sd.max()]
    labels = ["data", "mean W", *[f"W draw {i + 1}" for i in range(draws)], "sd (scaled)"]
    return plots.image_grid(torch.cat(rows).cpu().numpy(), image_shape, path, rows=len(rows),
                            title="the same z under the mean weights and weight draws", row_labels=labels)


@registry.register("analysis", "weight_predictive", images=True)
class WeightPredictive(Analysis):
    """Test log-likelihoods under S draws of the decoder weights (an S x N matrix), the posterior-predictive
    NLL and, across a study's runs, ArviZ's PSIS-LOO comparison."""

    title = "Predictive log-likelihood under weight draws"

    def __init__(self, *, draws: Annotated[int, Param(">= 1", "weight draws S from the guide")] = 100,
                 k: Annotated[int, Param(">= 1", "importance samples over z per draw")] = 100,
                 points: Annotated[int, Param(">= 0", "test points (0: all the evaluation used)")] = 0):
        self.draws, self.k, self.points = draws, k, points

    def run(self, ctx: RunContext) -> Result:
        pyro.set_rng_seed(ctx.seed)
        x = ctx.test_x[:self.points] if self.points else ctx.test_x
        start = time.perf_counter()
        ll = pointwise_log_likelihood(ctx.model, ctx.guide, x, draws=self.draws, k=self.k).double()
        runs.write_npz(ctx.run_dir / MATRIX, {"loglik": ll.cpu().numpy()})
        predictive = torch.logsumexp(ll, 0) - math.log(self.draws)
        metrics = {"predictive_nll": float(-predictive.mean()),
                   "predictive_nll_se": float(predictive.std() / math.sqrt(len(predictive))),
                   "nll_single_draw": float(-ll.mean()), "predictive_points": len(x),
                   "predictive_draws": self.draws, "predictive_k": self.k,
                   "predictive_seconds": time.perf_counter() - start}
        figures = []
        if weight_draws(ctx.guide, x, 1)[0]:  # global sites: a Bayesian decoder
            figures.append(weight_draw_figure(ctx.model, ctx.guide, x[:10], ctx.data.image_shape,
                                              ctx.run_dir / "weight_draws.png"))
        report = tables.records([metrics], ["predictive_nll", "predictive_nll_se", "nll_single_draw",
                                            "predictive_points", "predictive_draws", "predictive_k"])
        return Result(metrics, figures, report)

    @classmethod
    def aggregate(cls, folder: Path, study_runs: Sequence[StudyRun]) -> Result | None:
        """ArviZ ``compare`` (PSIS-LOO over the S draws of each run's S x N matrix, relative efficiency 1)
        and each run's share of LOO k-hat above 0.7, beside its predictive NLL."""
        found = [r for r in study_runs if (r.run_dir / MATRIX).is_file()]
        if len(found) < 2:
            return None
        matrices = {}
        for r in found:
            with np.load(r.run_dir / MATRIX) as f:
                matrices[r.label] = f["loglik"]
        if len({m.shape[1] for m in matrices.values()}) > 1:
            return None  # different test points: not comparable
        rows, khat = diagnostics.compare_pointwise(matrices)
        summary = []
        for r in found:
            m = runs.read_json(r.run_dir / runs.METRICS)
            share = float((khat[r.label] > diagnostics.KHAT_GOOD).mean())
            summary.append({"run": r.label, "loo_khat_share_above_0_7": share}
                           | {key: m.get(key) for key in ("predictive_nll", "predictive_nll_se", "nll_single_draw",
                                                          "test_nll", "weight_kl_per_example", "weight_sd_mean")})
        report = ("`predictive_nll` = -mean_n log (1/S) sum_s p(x_n | W_s); `nll_single_draw` = the mean over draws "
                  "of -log p(x_n | W_s). A point decoder's S rows differ only by the importance samples.\n\n"
                  + tables.records(summary, ["run", "predictive_nll", "predictive_nll_se", "nll_single_draw",
                                             "test_nll", "weight_kl_per_example", "weight_sd_mean",
                                             "loo_khat_share_above_0_7"])
                  + "\nArviZ `compare` (PSIS-LOO over the S draws of each decoder's S x N test log-likelihood, "
                    "relative efficiency 1). On held-out images the LOO correction `p_loo` measures how much single "
                    "weight draws matter; `elpd_loo` is then a conservative version of the held-out log predictive "
                    "density.\n\n"
                  + tables.records(rows, ["model", "rank", "elpd_loo", "p_loo", "elpd_diff", "se", "dse", "weight",
                                          "warning"]))
        return Result({"runs": summary, "loo_compare": rows}, report=report)
