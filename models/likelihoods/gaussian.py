"""Gaussian pixels with a fixed, a learned or a decoder-predicted variance."""

from __future__ import annotations

import math
from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry
from ppvae.registry import Param

SIGMA = Param("> 0", "the fixed sigma, or the initial sigma where it is learned or set in closed form")


@registry.register("likelihood", "gaussian_fixed")
class GaussianFixed(nn.Module):
    """Gaussian pixels with a fixed sigma: the least-squares VAE (sigma^2 = 0.5 is K&W's weighting)."""

    outputs_per_pixel = 1

    def __init__(self, *, sigma: Annotated[float, SIGMA] = 1.0):
        super().__init__()
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


@registry.register("likelihood", "gaussian_learned")
class GaussianLearned(GaussianFixed):
    """Gaussian pixels with one global sigma learned by gradient (parameterized as log sigma)."""

    def __init__(self, *, sigma: Annotated[float, SIGMA] = 1.0):
        nn.Module.__init__(self)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()


@registry.register("likelihood", "gaussian_meanvar")
class GaussianMeanVar(nn.Module):
    """Gaussian with decoder-predicted mean and log-variance per pixel (K&W eq. 10-11), unbounded below by
    default. ``mean = "sigmoid"`` and ``log_var_bound = 1`` are the extensions study's Frey Face decoder
    (sigmoid mean, tanh on the log-variance), which it bounded because the variance made gradients explode."""

    outputs_per_pixel = 2

    def __init__(self, *,
                 mean: Annotated[str, Param(doc="the mean's output: as the decoder gives it, or squashed into (0, 1)",
                                            choices=("identity", "sigmoid"))] = "identity",
                 log_var_bound: Annotated[float, Param(">= 0", "0: the log-variance unbounded; b > 0: log sigma^2 = "
                                                               "b tanh(out / b), within (-b, b)")] = 0.0):
        super().__init__()
        self.squash, self.log_var_bound = mean == "sigmoid", log_var_bound

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, log_var = out.chunk(2, dim=-1)
        if self.log_var_bound:
            log_var = self.log_var_bound * torch.tanh(log_var / self.log_var_bound)
        return dist.Normal(torch.sigmoid(loc) if self.squash else loc, (0.5 * log_var).exp()).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        loc = out.chunk(2, dim=-1)[0]
        return torch.sigmoid(loc) if self.squash else loc


__all__ = ["GaussianFixed", "GaussianLearned", "GaussianMeanVar"]
