"""The diagonal Normal posterior."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.distributions import MIN_SCALE
from ppvae.registry import Param


@registry.register("family", "normal")
class DiagonalNormal(nn.Module):
    """q(z|x) = N(loc, diag(scale^2)), the scale floored for stability. The encoder's second half is read
    through softplus, or (``scale = "exp"``) as the log-variance, scale = exp(raw / 2), as Kingma & Welling
    and most reference implementations (pythae) write it."""

    def __init__(self, latent_dim: int, *,
                 scale: Annotated[str, Param(doc="how the encoder gives the scale: softplus(raw), or exp(raw / 2) "
                                                 "(raw is the log-variance)", choices=("softplus", "exp"))
                                  ] = "softplus"):
        super().__init__()
        self.latent_dim, self.scale = latent_dim, scale
        self.outputs = 2 * latent_dim

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out.chunk(2, dim=-1)
        scale = F.softplus(raw) if self.scale == "softplus" else torch.exp(0.5 * raw)
        return dist.Normal(loc, scale + MIN_SCALE).to_event(1)
