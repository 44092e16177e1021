"""The standard Normal prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry


@registry.register("prior", "normal")
class StandardNormal(nn.Module):
    """p(z) = N(0, I); closed-form KL to the normal and lowrank guides."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
