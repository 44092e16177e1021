"""Theory vs practice: a trained VAE beside the models EM fits exactly, and the exact ELBO gap.

With ``eval.theory`` a run adds to ``metrics.json`` the test log-likelihoods (nats per example,
same training and test points as the VAE) of pPCA by closed-form maximum likelihood, pPCA by
EM and a GMM by EM (:func:`ppvae.em.baselines`). When the pair is a linear-Gaussian VAE (read
off its sites ``z`` and ``x``: a N(0, I) prior, a mean linear in z, one sigma for all pixels)
and its guide is Gaussian, it is pPCA, so it also adds the three exact terms of

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x))

and their residual: the gap between the ELBO and the log-likelihood is exactly the KL to the
true posterior, with no Monte Carlo error.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from ppvae.data import Dataset
from ppvae.em import baselines
from ppvae.models import ppca
from ppvae.evaluate import model_site, prior_draws
from ppvae.sampling import normal_parts

LINEARITY_TOL = 1e-4  # relative error allowed when checking that the decoder mean is linear in z


@torch.no_grad()
def linear_gaussian(model: Callable, x_template: torch.Tensor) -> ppca.PPCAParams | None:
    """The pPCA parameters (W, b, sigma) of a linear-Gaussian VAE, read off its sites; None for any other model."""
    d = prior_draws(model, x_template, 1).shape[-1]
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.zeros(1, d), torch.eye(d), torch.randn(4, d, generator=g)]).to(x_template)
    prior = normal_parts(model_site(model, "z", z, x_template))
    if prior is None or not (bool((prior[0] == 0).all()) and bool((prior[1] == 1).all())):
        return None
    likelihood = normal_parts(model_site(model, "x", z, x_template))
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
    q = poutine.trace(guide).get_trace(x, None).nodes["z"]["fn"]
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


def metrics(model: Callable, guide: Callable, data: Dataset, num_test: int, latent_dim: int,
            components: int = 10, seed: int = 0) -> dict:
    """EM baselines fitted to ``data.train_x`` and, for a linear-Gaussian VAE, the exact decomposition,
    all on the first ``num_test`` test points (the points the VAE is evaluated on)."""
    x = data.test_x[:num_test]
    return baselines(data.train_x, x, latent_dim, components, seed) | decomposition(model, guide, x)


ROWS = (("GMM by EM", "gmm_em_test_ll"), ("pPCA by EM", "ppca_em_test_ll"), ("pPCA, closed-form ML", "ppca_ml_test_ll"),
        ("this VAE: exact log p(x)", "exact_test_ll"), ("this VAE: IWAE bound", "test_ll"),
        ("this VAE: ELBO (Monte Carlo)", "test_elbo"))


def report(m: dict) -> str:
    """Markdown: the log-likelihood table and, when present, the exact decomposition."""
    lines = ["| model | test log-likelihood (nats per example) |", "| --- | --- |"]
    lines += [f"| {name} | {m[key]:.3f} |" for name, key in ROWS if m.get(key) is not None]
    if "exact_test_ll" in m:
        lines += ["", "Exact decomposition on the test points (the pair is pPCA):", "",
                  "| log p(x) | ELBO | KL(q(z\\|x) \\|\\| p(z\\|x)) | max \\|log p(x) - ELBO - KL\\| |",
                  "| --- | --- | --- | --- |",
                  f"| {m['exact_test_ll']:.4f} | {m['exact_test_elbo']:.4f} | {m['exact_test_kl_posterior']:.4f} "
                  f"| {m['exact_decomposition_residual']:.2e} |"]
    return "\n".join(lines) + "\n"
