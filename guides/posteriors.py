"""Posterior families q(z|x): map encoder outputs to a distribution over z."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset

MIN_SCALE = 1e-5


class DiagonalNormal(nn.Module):
    """q(z|x) = N(loc, diag(scale^2)); scale through softplus, floored for stability."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = 2 * latent_dim

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "DiagonalNormal":
        return cls(cfg.model.latent_dim)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)


class PointMass(nn.Module):
    """q(z|x) = delta(encoder(x)): a deterministic code, i.e. a (MAP-regularized) autoencoder."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = latent_dim

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "PointMass":
        return cls(cfg.model.latent_dim)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Delta(out).to_event(1)


FAMILIES: dict[str, type[nn.Module]] = {"normal": DiagonalNormal, "delta": PointMass}
