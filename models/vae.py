"""The composed VAE model: z ~ prior, x ~ likelihood(decoder(z[, y])), one ``data`` plate."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn


def with_labels(h: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Append one-hot labels to the last dimension (broadcast over particle dims); a no-op when
    ``num_classes`` is 0. Conditional pairs (CVAE) use it on both decoder and encoder inputs."""
    if not num_classes:
        return h
    if y is None:
        raise ValueError("This is a conditional (CVAE) pair: call it with labels y.")
    onehot = F.one_hot(y, num_classes).to(h.dtype)
    return torch.cat([h, onehot.expand(h.shape[:-1] + (num_classes,))], dim=-1)


class VAEModel(nn.Module):
    """A Pyro model built from three swappable parts.

    Calling the module runs the model (``model(x, y=None)``); ``decode`` gives p(x|z) for
    plots and evaluation. All parameters (decoder, likelihood, learnable prior) are
    registered under ``name`` with :func:`pyro.module`. With ``num_classes > 0`` the
    decoder also reads the one-hot label (a conditional VAE).
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: nn.Module, name: str = "model",
                 num_classes: int = 0):
        super().__init__()
        self.prior, self.decoder, self.likelihood, self.name = prior, decoder, likelihood, name
        self.num_classes = num_classes

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return self.likelihood(self.decoder(with_labels(z, y, self.num_classes)))

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(with_labels(z, y, self.num_classes)))

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging each epoch: the likelihood's sigma when it has one, and its own metrics."""
        sigma = getattr(self.likelihood, "sigma", None)
        out = {} if sigma is None else {"likelihood_sigma": float(sigma.detach())}
        return out | (self.likelihood.metrics() if hasattr(self.likelihood, "metrics") else {})

    def after_step(self, model: nn.Module, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Trainer hook: a likelihood with a closed-form update (``after_step(out, x)``) gets the
        decoder outputs for z drawn from the guide on the batch just trained on."""
        update = getattr(self.likelihood, "after_step", None)
        if update is not None:
            z = poutine.trace(guide).get_trace(x, y).nodes["z"]["value"]
            update(self.decoder(with_labels(z, y, self.num_classes)), x)

    def on_epoch_end(self, epoch: int) -> None:
        """Trainer hook, passed on to the likelihood (e.g. a staged schedule)."""
        if hasattr(self.likelihood, "on_epoch_end"):
            self.likelihood.on_epoch_end(epoch)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decode(z, y), obs=x)
