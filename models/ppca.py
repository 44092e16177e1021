"""Probabilistic PCA (the linear-Gaussian VAE): the model whose log p(x) is known exactly.

p(z) = N(0, I_d), p(x|z) = N(W z + b, sigma^2 I_D), so p(x) = N(b, W W^T + sigma^2 I) and
p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W + sigma^2 I. Every estimator is
checked against these formulas, and training against the closed-form maximum-likelihood
solution of Tipping & Bishop (1999).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence
from torch import nn


class PPCAParams(NamedTuple):
    W: torch.Tensor  # [D, d]
    b: torch.Tensor  # [D]
    sigma: torch.Tensor  # scalar


def params_of(model: nn.Module) -> PPCAParams:
    """Read (W, b, sigma) off a VAEModel with a linear decoder and a Gaussian likelihood."""
    linears = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError("params_of needs a linear decoder (model.decoder.hidden = []).")
    sigma = model.likelihood.sigma
    return PPCAParams(linears[0].weight.detach(), linears[0].bias.detach(), torch.as_tensor(sigma).detach())


def marginal(p: PPCAParams) -> dist.MultivariateNormal:
    """p(x) = N(b, W W^T + sigma^2 I)."""
    D = p.W.shape[0]
    cov = p.W @ p.W.T + p.sigma**2 * torch.eye(D, dtype=p.W.dtype, device=p.W.device)
    return dist.MultivariateNormal(p.b, covariance_matrix=cov)


def exact_log_likelihood(x: torch.Tensor, p: PPCAParams) -> torch.Tensor:
    """log p(x) per data point, in nats."""
    return marginal(p).log_prob(x)


def exact_posterior(x: torch.Tensor, p: PPCAParams) -> dist.MultivariateNormal:
    """p(z|x) for each row of x (batch shape [N], event shape [d])."""
    d = p.W.shape[1]
    M = p.W.T @ p.W + p.sigma**2 * torch.eye(d, dtype=p.W.dtype, device=p.W.device)
    M_inv = torch.linalg.inv(M)
    loc = (x - p.b) @ p.W @ M_inv.T
    return dist.MultivariateNormal(loc, covariance_matrix=p.sigma**2 * M_inv)


def fit_ml(x: torch.Tensor, latent_dim: int) -> PPCAParams:
    """Closed-form maximum-likelihood pPCA (Tipping & Bishop 1999, eq. 7-8), with R = I."""
    b = x.mean(0)
    S = torch.cov((x - b).T, correction=0)
    evals, evecs = torch.linalg.eigh(S)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    W = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
    return PPCAParams(W, b, sigma2.sqrt())


def sample(p: PPCAParams, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n data points from the linear-Gaussian model."""
    d = p.W.shape[1]
    z = torch.randn(n, d, generator=generator, dtype=p.W.dtype)
    eps = torch.randn(n, p.W.shape[0], generator=generator, dtype=p.W.dtype)
    return z @ p.W.T + p.b + p.sigma * eps


def gaussian_elbo(x: torch.Tensor, p: PPCAParams, q: dist.MultivariateNormal) -> torch.Tensor:
    """ELBO of a Gaussian q(z|x) = N(m, S) under pPCA, in closed form (no sampling), per data point.

    E_q log p(x|z) = -D/2 log(2 pi sigma^2) - (|x - W m - b|^2 + tr(W S W^T)) / (2 sigma^2), minus KL(q || N(0, I)).
    """
    D = x.shape[-1]
    m, S = q.loc, q.covariance_matrix
    sigma2 = p.sigma**2
    resid = x - m @ p.W.T - p.b
    spread = torch.einsum("ij,...jk,ik->...", p.W, S, p.W)
    recon = -0.5 * D * torch.log(2 * math.pi * sigma2) - (resid.pow(2).sum(-1) + spread) / (2 * sigma2)
    prior = dist.MultivariateNormal(torch.zeros_like(m), torch.eye(m.shape[-1], dtype=m.dtype, device=m.device))
    return recon - kl_divergence(q, prior)
