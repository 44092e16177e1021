"""The composed VAE model: z ~ prior, x ~ likelihood(decoder(z)), one ``data`` plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VAEModel(nn.Module):
    """A Pyro model built from three swappable parts.

    Calling the module runs the model (``model(x, y=None)``); ``decode`` gives p(x|z) for
    plots and evaluation. All parameters (decoder, likelihood, learnable prior) are
    registered under ``name`` with :func:`pyro.module`.
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: nn.Module, name: str = "model"):
        super().__init__()
        self.prior, self.decoder, self.likelihood, self.name = prior, decoder, likelihood, name

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        return self.likelihood(self.decoder(z))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z))

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging each epoch: the likelihood's sigma when it has one."""
        sigma = getattr(self.likelihood, "sigma", None)
        return {} if sigma is None else {"likelihood_sigma": float(sigma)}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decode(z), obs=x)
