"""Priors p(z): modules returning a distribution with event shape ``[latent_dim]``."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset


class StandardNormal(nn.Module):
    """p(z) = N(0, I). Buffers (not parameters) so the prior follows the model's device."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "StandardNormal":
        return cls(cfg.model.latent_dim)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS: dict[str, type[nn.Module]] = {"normal": StandardNormal}
