"""Theory vs practice: a trained VAE beside the models EM fits exactly, and the exact ELBO gap.

With ``[eval.theory]`` a run adds to ``metrics.json`` the test log-likelihoods (nats per example,
same training and test points as the VAE) of pPCA by closed-form maximum likelihood, pPCA by
EM and a GMM by EM (:func:`ppvae.analyses.em.baselines`). When the pair is a linear-Gaussian VAE (read
off its sites ``z`` and ``x``: a N(0, I) prior, a mean linear in z, one sigma for all pixels)
and its guide is Gaussian, it is pPCA, so it also adds the three exact terms of

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x))

and their residual: the gap between the ELBO and the log-likelihood is exactly the KL to the
true posterior, with no Monte Carlo error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from ppvae import registry, tables
from ppvae.analyses.base import Analysis, Result, RunContext
from ppvae.analyses.em import baselines
from ppvae.evaluation.sampling import normal_parts
from ppvae.models import ppca
from ppvae.registry import Param
from ppvae.sites import LATENT, OBSERVED, model_site, prior_draws

LINEARITY_TOL = 1e-4  # relative error allowed when checking that the decoder mean is linear in z


@torch.no_grad()
def linear_gaussian(model: Callable, x_template: torch.Tensor) -> ppca.PPCAParams | None:
    """The pPCA parameters (W, b, sigma) of a linear-Gaussian VAE, read off its sites; None for any other model."""
    d = prior_draws(model, x_template, 1).shape[-1]
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.zeros(1, d), torch.eye(d), torch.randn(4, d, generator=g)]).to(x_template)
    prior = normal_parts(model_site(model, LATENT, z, x_template))
    if prior is None or not (bool((prior[0] == 0).all()) and bool((prior[1] == 1).all())):
        return None
    likelihood = normal_parts(model_site(model, OBSERVED, z, x_template))
    if likelihood is None:
        return None
    mean, scale = (t.reshape(len(z), -1).double() for t in likelihood)
    b, W = mean[0], (mean[1:d + 1] - mean[0]).T
    error = (mean[d + 1:] - (z[d + 1:].double() @ W.T + b)).abs().max()
    if error > LINEARITY_TOL * (1 + mean.abs().max()) or bool((scale != scale[0, 0]).any()):
        return None
    return ppca.PPCAParams(W, b, scale[0, 0])


def _gaussian_posterior(guide: Callable, x: torch.Tensor) -> dist.MultivariateNormal | None:
    """q(z|x) as a float64 full-covariance Normal when the guide's ``z`` site is Gaussian, else None."""
    q = poutine.trace(guide).get_trace(x, None).nodes[LATENT]["fn"]
    if isinstance(q, (dist.MultivariateNormal, dist.LowRankMultivariateNormal)):
        return dist.MultivariateNormal(q.loc.double(), covariance_matrix=q.covariance_matrix.double())
    parts = normal_parts(q)
    if parts is None or parts[0].dim() != 2:
        return None
    return dist.MultivariateNormal(parts[0].double(), scale_tril=torch.diag_embed(parts[1].double()))


@torch.no_grad()
def decomposition(model: Callable, guide: Callable, x: torch.Tensor) -> dict[str, float]:
    """Exact log p(x), ELBO, KL(q || p(z|x)) (means over ``x``) and the largest per-point
    |log p(x) - ELBO - KL|; empty when the pair is not a linear-Gaussian VAE with a Gaussian guide."""
    p = linear_gaussian(model, x)
    q = None if p is None else _gaussian_posterior(guide, x)
    if q is None:
        return {}
    xd = x.reshape(len(x), -1).double()
    log_px = ppca.exact_log_likelihood(xd, p)
    elbo = ppca.gaussian_elbo(xd, p, q)
    kl = kl_divergence(q, ppca.exact_posterior(xd, p))
    return {
        "exact_test_ll": log_px.mean().item(),
        "exact_test_elbo": elbo.mean().item(),
        "exact_test_kl_posterior": kl.mean().item(),
        "exact_decomposition_residual": (log_px - elbo - kl).abs().max().item(),
    }


ROWS = (("GMM by EM", "gmm_em_test_ll"), ("pPCA by EM", "ppca_em_test_ll"), ("pPCA, closed-form ML", "ppca_ml_test_ll"),
        ("this VAE: exact log p(x)", "exact_test_ll"), ("this VAE: IWAE bound", "test_ll"),
        ("this VAE: ELBO (Monte Carlo)", "test_elbo"))


def report(m: dict) -> str:
    """Markdown: the log-likelihood table and, when present, the exact decomposition."""
    text = tables.markdown(["model", "test log-likelihood (nats per example)"],
                           [[name, m[key]] for name, key in ROWS if m.get(key) is not None])
    if "exact_test_ll" in m:
        text += "\nExact decomposition on the test points (the pair is pPCA):\n\n" + tables.markdown(
            ["log p(x)", "ELBO", "KL(q(z\\|x) \\|\\| p(z\\|x))", "max \\|log p(x) - ELBO - KL\\|"],
            [[m["exact_test_ll"], m["exact_test_elbo"], m["exact_test_kl_posterior"],
              format(m["exact_decomposition_residual"], ".2e")]], number=".4f")
    return text


@registry.register("analysis", "theory", real_valued=True, unconditional=True)
class Theory(Analysis):
    """Test log-likelihoods of pPCA (closed-form ML and EM) and a GMM by EM on the same data and, for a
    linear-Gaussian pair, the exact log p(x) = ELBO + KL(q || p(z|x))."""

    title = "Theory vs practice"

    def __init__(self, *, components: Annotated[int, Param(">= 1", "components of the GMM baseline (diagonal above "
                                                                    "64 pixels)")] = 10):
        self.components = components

    def run(self, ctx: RunContext) -> Result:
        """EM baselines fitted to the training set and, for a linear-Gaussian VAE, the exact decomposition,
        all on the evaluation's test points."""
        x = ctx.test_x
        latent_dim = prior_draws(ctx.model, x, 1).shape[-1]
        out = baselines(ctx.data.train_x, x, latent_dim, self.components, ctx.seed)
        out |= decomposition(ctx.model, ctx.guide, x)
        return Result(out, report=report(ctx.metrics | out))
