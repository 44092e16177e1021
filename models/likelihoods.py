"""Likelihoods p(x|z): map decoder outputs to a distribution over the flat image.

Every part in models/ and guides/ is registered by name and built by ``from_config(cfg, data)``,
so adding one is a class and a registry entry; ``ppvae.build`` stays generic.

Each likelihood says how many decoder outputs it needs per pixel (``outputs_per_pixel``)
and owns its own parameters (a learned sigma), so swapping it swaps the whole observation
model without touching the decoder.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset


class Bernoulli(nn.Module):
    """Bernoulli pixels with logits from the decoder; needs binary data."""

    outputs_per_pixel = 1
    needs_binary_data = True

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "Bernoulli":
        return cls()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class GaussianFixed(nn.Module):
    """Gaussian pixels with a fixed sigma: the "least squares" VAE (sigma^2 = 0.5 is K&W's weighting)."""

    outputs_per_pixel = 1
    needs_binary_data = False

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianFixed":
        return cls(cfg.model.sigma)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


class GaussianLearned(GaussianFixed):
    """Gaussian pixels with one global sigma learned by gradient (parameterized as log sigma)."""

    def __init__(self, sigma: float = 1.0):
        nn.Module.__init__(self)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()


class GaussianMeanVar(nn.Module):
    """Gaussian with decoder-predicted mean and log-variance per pixel (Kingma & Welling eq. 10-11)."""

    outputs_per_pixel = 2
    needs_binary_data = False

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianMeanVar":
        return cls()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, log_var = out.chunk(2, dim=-1)
        return dist.Normal(loc, (0.5 * log_var).exp()).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.chunk(2, dim=-1)[0]


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": Bernoulli,
    "gaussian_fixed": GaussianFixed,
    "gaussian_learned": GaussianLearned,
    "gaussian_meanvar": GaussianMeanVar,
}

__all__ = ["Bernoulli", "GaussianFixed", "GaussianLearned", "GaussianMeanVar", "LIKELIHOODS"]
