"""The guide of a Bayesian-decoder VAE: a mean-field Normal over the decoder weights plus the
amortized q(z|x).

See :mod:`ppvae.models.bayesian` for the model, the B/N scaling of the weight sites and why
each call draws its weights once.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppvae.distributions import MIN_SCALE
from ppvae.nn.bayesian import WeightLink
from ppvae.sites import LATENT, Preset, plate_shape

from .vae import VAEGuide


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class WeightPosterior(nn.Module):
    """q(W) = prod_i N(mu_i, sigma_i^2) over every decoder weight, sigma = softplus(rho) + 1e-5.

    Means start like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)), or from a point estimate
    (:func:`ppvae.build.init_from_run`); every sigma starts at ``init_scale``, small, so training starts
    near a point-estimate decoder and widens the posterior where the data allow.
    """

    def __init__(self, shapes: dict[str, torch.Size], init_scale: float, link: WeightLink):
        super().__init__()
        self.names = list(shapes)
        self._index = {name: i for i, name in enumerate(self.names)}
        fan_in = {name.rsplit(".", 1)[0]: shape[-1] for name, shape in shapes.items() if len(shape) == 2}
        self.locs = nn.ParameterList()
        self.raw_scales = nn.ParameterList()
        for name, shape in shapes.items():
            bound = 1 / math.sqrt(fan_in[name.rsplit(".", 1)[0]])
            self.locs.append(nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
            self.raw_scales.append(nn.Parameter(torch.full(shape, inverse_softplus(init_scale - MIN_SCALE))))
        self.link = link
        link.posterior = self

    def loc(self, name: str) -> torch.Tensor:
        return self.locs[self._index[name]]

    def scale(self, name: str) -> torch.Tensor:
        return F.softplus(self.raw_scales[self._index[name]]) + MIN_SCALE

    def forward(self) -> None:
        """Sample every weight site once, shared by enclosing vectorized plates (see the model docs)."""
        shape = plate_shape()
        for name in self.names:
            loc = self.loc(name)
            fn = dist.Normal(loc, self.scale(name)).to_event(loc.dim())
            own = fn.rsample()
            own = own.expand(shape + own.shape)
            with Preset({name: own}):
                value = pyro.sample(name, fn)
            if value is own:  # not replaced by a replayed or conditioned value
                self.link.record(name, value)


class BayesianVAEGuide(VAEGuide):
    """q(W) q(z|x): the weight posterior (global sites at scale B/N) and the amortized local guide."""

    def __init__(self, encoder: nn.Module, family: nn.Module, weights: WeightPosterior, dataset_size: int,
                 kl_scale: float = 1.0):
        super().__init__(encoder, family)
        self.weights, self.dataset_size, self.kl_scale = weights, dataset_size, kl_scale

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with poutine.scale(scale=self.kl_scale * x.shape[0] / self.dataset_size):
            self.weights()
        with pyro.plate("data", x.shape[0]):
            pyro.sample(LATENT, self.posterior(x, y))


__all__ = ["BayesianVAEGuide", "WeightPosterior"]
