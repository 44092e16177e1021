"""Guides that use a known posterior: the reference point for every estimator test."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch


class ExactPosteriorGuide:
    """q(z|x) = the exact posterior p(z|x), given as a function of the batch.

    With it every estimator (ELBO, IWAE_k, Renyi) equals log p(x) exactly, because the
    importance weight p(x, z) / q(z|x) = p(x) does not depend on z.
    """

    def __init__(self, posterior: Callable[[torch.Tensor], dist.Distribution]):
        self.posterior = posterior

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))
