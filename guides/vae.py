"""The composed amortized guide: z ~ family(encoder(x[, y])) inside the ``data`` plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae.nn import with_labels
from ppvae.sites import LATENT, FastPath


class VAEGuide(FastPath, nn.Module):
    """A Pyro guide built from an encoder network and a posterior family.

    Calling the module runs the guide (``guide(x, y=None)``); ``posterior(x)`` returns
    q(z|x) itself, for evaluation and latent plots. With ``num_classes > 0`` the encoder
    also reads the one-hot label (a conditional VAE).
    """

    fast_path = True  # its densities come from its parts (ppvae.infer.fast)

    def __init__(self, encoder: nn.Module, family: nn.Module, name: str = "guide", num_classes: int = 0):
        super().__init__()
        self.encoder, self.family, self.name, self.num_classes = encoder, family, name, num_classes

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return self.family(self.encoder(with_labels(x, y, self.num_classes)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(LATENT, self.posterior(x, y))
