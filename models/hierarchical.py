"""Two stochastic layers (Burda et al. 2015): z2 ~ N(0, I), z1 ~ N(mu(z2), sigma(z2)), x ~ p(x | z1).

The layer next to the data keeps the site name ``z`` (so evaluation, reconstructions and
latent plots work unchanged); the top layer is ``z2``.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from .vae import VAEModel


class TwoLayerModel(VAEModel):
    """p(z2) p(z1 | z2) p(x | z1); ``conditional`` maps z2 to the parameters ``head`` turns into p(z1 | z2)."""

    def __init__(self, prior: nn.Module, conditional: nn.Module, head: nn.Module, decoder: nn.Module,
                 likelihood: nn.Module, name: str = "model"):
        super().__init__(prior, decoder, likelihood, name)
        self.conditional, self.head = conditional, head

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z", self.head(self.conditional(z2)))
            pyro.sample("x", self.decode(z1), obs=x)
