"""A linear-Gaussian (pPCA) problem with known parameters, shared by the estimator tests."""

import torch
from ppvae.guides import DiagonalNormal, VAEGuide
from ppvae.guides.exact import ExactPosteriorGuide
from ppvae.models import GaussianFixed, StandardNormal, VAEModel, ppca
from torch import nn

D, d = 6, 2


def problem(n: int = 64, seed: int = 0):
    """(model, params, x) in float64 with W, b, sigma drawn once from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    p = ppca.PPCAParams(W, b, torch.tensor(0.5, dtype=torch.float64))
    decoder = nn.Linear(d, D).double()
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
    model = VAEModel(StandardNormal(d), decoder, GaussianFixed(sigma=0.5)).double()
    return model, p, ppca.sample(p, n, generator=g)


def exact_guide(p):
    return ExactPosteriorGuide(lambda x: ppca.exact_posterior(x, p))


def amortized_guide(p, scale_factor: float = 1.0, loc_noise: float = 0.0, seed: int = 1):
    """A linear diagonal-Normal guide set to the exact posterior mean map and marginal scales,
    then distorted: scales multiplied by ``scale_factor``, weights perturbed by ``loc_noise``."""
    M_inv = torch.linalg.inv(p.W.T @ p.W + p.sigma**2 * torch.eye(d, dtype=torch.float64))
    A = M_inv @ p.W.T
    std = (p.sigma**2 * torch.diagonal(M_inv)).sqrt() * scale_factor
    encoder = nn.Linear(D, 2 * d).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.weight[:d] = A + loc_noise * torch.randn(d, D, generator=g, dtype=torch.float64)
        encoder.bias[:d] = -A @ p.b
        encoder.bias[d:] = std + torch.log(-torch.expm1(-std))  # inverse softplus
    return VAEGuide(encoder, DiagonalNormal(d))


__all__ = ["problem", "exact_guide", "amortized_guide"]
