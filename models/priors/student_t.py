"""A heavy-tailed prior: independent Student-t coordinates."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry
from ppvae.registry import Param


@registry.register("prior", "student_t")
class StudentT(nn.Module):
    """p(z) = prod_j StudentT(df, 0, 1): heavier tails than N(0, I) (df -> infinity recovers it).

    No closed-form KL to the Normal guide: ``meanfield`` uses a Monte Carlo KL and says so.
    """

    def __init__(self, latent_dim: int, *, df: Annotated[float, Param("> 0", "degrees of freedom")] = 3.0):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("df", torch.full((latent_dim,), float(df)))

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self.df, torch.zeros_like(self.df), torch.ones_like(self.df)).to_event(1)
