"""The sparse Beta prior for codes on (0, 1), scored in logit coordinates."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry
from ppvae.distributions import LogitBeta
from ppvae.registry import Param


class SigmoidCode(nn.Module):
    """Maps the first ``latent_dim`` inputs through a sigmoid (logit coordinates to codes on (0, 1));
    inputs after them (a conditional pair's one-hot label) pass unchanged."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(h[..., :self.latent_dim]), h[..., self.latent_dim:]], dim=-1)


@registry.register("prior", "beta", support="unit_interval")
class SparseBeta(nn.Module):
    """p(c) = prod_j Beta(a, b) for codes c on (0, 1); a, b < 1 put the mass near 0 and 1.

    The latent site holds z = logit(c), where Beta densities and draws are exact in float32
    (see :mod:`ppvae.distributions`); the decoder reads c = sigmoid(z) through
    ``decoder_input``. Needs a guide in the same coordinates (``beta`` or ``kumaraswamy``).
    """

    def __init__(self, latent_dim: int, *,
                 a: Annotated[float, Param("> 0", "concentration a (a, b < 1 put the mass near 0 and 1)")] = 0.2,
                 b: Annotated[float, Param("> 0", "concentration b")] = 0.2):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("a", torch.full((latent_dim,), float(a)))
        self.register_buffer("b", torch.full((latent_dim,), float(b)))
        self.decoder_input = SigmoidCode(latent_dim)

    def forward(self) -> dist.Distribution:
        return LogitBeta(self.a, self.b).to_event(1)
