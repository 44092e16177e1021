"""The composed VAE model: z ~ prior, x ~ likelihood(decoder(z[, y])), one ``data`` plate; and point-estimate
decoder weights, the default of the ``weights`` kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ppvae import registry
from ppvae.nn import make_network, with_labels
from ppvae.registry import Spec
from ppvae.sites import LATENT, OBSERVED, FastPath


class VAEModel(FastPath, nn.Module):
    """A Pyro model built from three swappable parts.

    Calling the module runs the model (``model(x, y=None)``); ``decode`` gives p(x|z) for
    plots and evaluation. All parameters (decoder, likelihood, learnable prior) are
    registered under ``name`` with :func:`pyro.module`. With ``num_classes > 0`` the
    decoder also reads the one-hot label (a conditional VAE).
    """

    fast_path = True  # its densities come from its parts (ppvae.infer.fast)

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
            z = poutine.trace(guide).get_trace(x, y).nodes[LATENT]["value"]
            update(self.decoder(with_labels(z, y, self.num_classes)), x)

    def before_evaluation(self, model: nn.Module, guide: Callable,
                          batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Trainer hook: a likelihood with a closed-form fit (``fit``) gets the decoder outputs for z drawn
        from the guide over the training ``batches``, so evaluation uses the whole set's optimum."""
        fit = getattr(self.likelihood, "fit", None)
        if fit is None:
            return

        def outputs():
            for x, y in batches:
                z = poutine.trace(guide).get_trace(x, y).nodes[LATENT]["value"]
                yield self.decoder(with_labels(z, y, self.num_classes)), x

        fit(outputs())

    def on_epoch_end(self, epoch: int) -> None:
        """Trainer hook, passed on to the likelihood (e.g. a staged schedule)."""
        if hasattr(self.likelihood, "on_epoch_end"):
            self.likelihood.on_epoch_end(epoch)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(LATENT, self.prior())
            pyro.sample(OBSERVED, self.decode(z, y), obs=x)


@registry.register("weights", "point")
class PointWeights:
    """Point estimates of the decoder weights (registered with pyro.module): the usual VAE."""

    def decoder(self, network: Spec, in_dim: int, out_dim: int, image_shape: tuple[int, ...]) -> nn.Module:
        return make_network(network, in_dim, out_dim, image_shape, "decoder")
