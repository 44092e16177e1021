"""Posterior collapse set by sigma: what a linear VAE at the run's noise level keeps (Lucas et al., 2019).

A linear VAE with a diagonal Gaussian guide and a fixed Gaussian sigma has the pPCA maximum-likelihood
solution at its ELBO optimum: along the training covariance's eigenvectors u_i (eigenvalues
lambda_1 >= lambda_2 >= ...), the decoder keeps direction i with weight sqrt(lambda_i - sigma^2) when
lambda_i > sigma^2 and drops it otherwise. A kept unit's posterior mean varies over x with variance
1 - sigma^2 / lambda_i and carries KL(q(z_i|x) || p(z_i)) = log(lambda_i / sigma^2) / 2 per point; a
dropped unit is exactly the prior. So sigma alone decides how many units collapse, and this analysis
says how many, from the data's spectrum, beside what the run measured (``active_units``, ``test_kl``).
For a nonlinear pair the same numbers are the linear reference at the same sigma.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from ppvae import registry, tables
from ppvae.analyses.base import Analysis, Result, RunContext
from ppvae.evaluation.loglik import ACTIVE_UNIT_THRESHOLD
from ppvae.evaluation.sampling import units_holding
from ppvae.models import ppca
from ppvae.sites import prior_draws


def fixed_sigma_ppca(train_x: torch.Tensor, latent_dim: int, sigma: float) -> tuple[ppca.PPCAParams, torch.Tensor]:
    """The pPCA maximum-likelihood solution at a given sigma, W = U_d (Lambda_d - sigma^2)_+^(1/2), and the
    training covariance's ``latent_dim`` largest eigenvalues (float64, descending)."""
    x = train_x.double().cpu().reshape(len(train_x), -1)
    b = x.mean(0)
    centred = x - b
    lam, vectors = torch.linalg.eigh(centred.T @ centred / len(x))
    lam, vectors = lam.flip(0)[:latent_dim], vectors.flip(1)[:, :latent_dim]
    W = vectors * (lam - sigma ** 2).clamp_min(0).sqrt()
    return ppca.PPCAParams(W, b, torch.tensor(sigma, dtype=torch.float64)), lam


def prediction(train_x: torch.Tensor, test_x: torch.Tensor, latent_dim: int, sigma: float) -> dict[str, float]:
    """The linear optimum at ``sigma``: its active units (Burda's threshold on the training variance of the
    posterior mean, 1 - sigma^2 / lambda_i), and on the test points its KL(p(z|x) || p(z)) (the exact
    posterior, which a diagonal guide matches there) and log-likelihood."""
    params, lam = fixed_sigma_ppca(train_x, latent_dim, sigma)
    kept = lam > sigma ** 2
    activity = (1 - sigma ** 2 / lam).clamp_min(0)
    test = test_x.double().cpu().reshape(len(test_x), -1)
    posterior = ppca.exact_posterior(test, params)
    prior = dist.MultivariateNormal(torch.zeros(latent_dim, dtype=torch.float64),
                                    covariance_matrix=torch.eye(latent_dim, dtype=torch.float64))
    return {"ppca_active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
            "ppca_kept_units": int(kept.sum()),
            "ppca_units_for_90pct_kl": units_holding((0.5 * torch.log(lam[kept] / sigma ** 2)).tolist(), 0.9),
            "ppca_test_kl": kl_divergence(posterior, prior).mean().item(),
            "ppca_fixed_sigma_test_ll": ppca.exact_log_likelihood(test, params).mean().item(),
            "ppca_smallest_kept_eigenvalue": float(lam[kept].min()) if bool(kept.any()) else math.nan}


@registry.register("analysis", "linear_collapse", real_valued=True, unconditional=True)
class LinearCollapse(Analysis):
    """How many latent units a linear VAE keeps at the run's sigma (pPCA at that sigma), beside the
    run's active units and KL."""

    title = "Posterior collapse set by sigma (the linear optimum)"

    def run(self, ctx: RunContext) -> Result:
        sigma = ctx.metrics.get("likelihood_sigma")
        if sigma is None:
            return Result(report="Not computed: the likelihood has no single sigma (a per-pixel or learned "
                                 "variance head); the linear optimum is stated for one sigma on every pixel.")
        latent_dim = prior_draws(ctx.model, ctx.test_x, 1).shape[-1]
        out = prediction(ctx.data.train_x, ctx.test_x, latent_dim, float(sigma))
        rows = [["active units", out["ppca_active_units"], ctx.metrics.get("active_units")],
                ["units holding 90 % of the KL", out["ppca_units_for_90pct_kl"],
                 ctx.metrics.get("test_units_for_90pct_kl")],
                ["KL(q(z|x) || p(z)), nats per test point", out["ppca_test_kl"], ctx.metrics.get("test_kl")],
                ["test log-likelihood", out["ppca_fixed_sigma_test_ll"], ctx.metrics.get("test_ll")]]
        report = (f"sigma = {float(sigma):.4g}, {latent_dim} latent units; the linear optimum keeps the "
                  f"{out['ppca_kept_units']} directions whose training variance exceeds sigma^2.\n\n"
                  + tables.markdown(["", "linear optimum at this sigma (training spectrum)", "this run"], rows))
        return Result(out, report=report)
