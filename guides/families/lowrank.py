"""A Normal posterior with a low-rank-plus-diagonal (or full) covariance."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.distributions import MIN_SCALE
from ppvae.registry import Param


@registry.register("family", "lowrank")
class LowRankNormal(nn.Module):
    """q(z|x) = N(loc, D (V V^T + I) D), D = diag(d), rank-r V per point: correlated posteriors.

    With rank = latent_dim the covariance is unrestricted.

    The factor is scaled by d (W = D V) so that Pyro's capacitance matrix I + W^T D^-2 W = I + V^T V
    stays well conditioned when posterior scales are small: with an unscaled W it is
    ill-conditioned in float32 as d shrinks and its Cholesky fails (seen on MNIST).
    """

    def __init__(self, latent_dim: int, *,
                 rank: Annotated[int, Param(">= 1", "rank of the covariance factor (latent_dim: full)")] = 2):
        super().__init__()
        self.latent_dim, self.rank = latent_dim, rank
        self.outputs = latent_dim * (2 + rank)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, raw, factor = out.split([d, d, d * self.rank], dim=-1)
        scale = F.softplus(raw) + MIN_SCALE
        factor = scale.unsqueeze(-1) * factor.unflatten(-1, (d, self.rank))
        return dist.LowRankMultivariateNormal(loc, factor, scale**2)
