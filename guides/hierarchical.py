"""The guide for two stochastic layers: q(z1 | x) q(z2 | z1), sites ``z`` and ``z2``."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from .vae import VAEGuide


class TwoLayerGuide(VAEGuide):
    """Bottom-up amortized guide: the one-layer guide for z1, then ``top_encoder``/``top_family`` for z2."""

    def __init__(self, encoder: nn.Module, family: nn.Module, top_encoder: nn.Module, top_family: nn.Module,
                 name: str = "guide"):
        super().__init__(encoder, family, name)
        self.top_encoder, self.top_family = top_encoder, top_family

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z", self.posterior(x))
            pyro.sample("z2", self.top_family(self.top_encoder(z1)))
