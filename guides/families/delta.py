"""A point mass: the guide of a (MAP-regularized) autoencoder."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry


@registry.register("family", "delta")
class PointMass(nn.Module):
    """q(z|x) = delta(encoder(x)): a deterministic code, i.e. an autoencoder (test_ll is no bound)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = latent_dim

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Delta(out).to_event(1)
