"""The composed amortized guide: z ~ family(encoder(x)) inside the ``data`` plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VAEGuide(nn.Module):
    """A Pyro guide built from an encoder network and a posterior family.

    Calling the module runs the guide (``guide(x, y=None)``); ``posterior(x)`` returns
    q(z|x) itself, for evaluation and latent plots.
    """

    def __init__(self, encoder: nn.Module, family: nn.Module, name: str = "guide"):
        super().__init__()
        self.encoder, self.family, self.name = encoder, family, name

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        return self.family(self.encoder(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))
