"""The diagonal Normal posterior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.distributions import MIN_SCALE


@registry.register("family", "normal")
class DiagonalNormal(nn.Module):
    """q(z|x) = N(loc, diag(scale^2)); scale through softplus, floored for stability."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = 2 * latent_dim

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)
