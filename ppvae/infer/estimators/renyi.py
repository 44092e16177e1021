"""Pyro's RenyiELBO, kept for comparison with its limits."""

from __future__ import annotations

from typing import Annotated

import pyro
import torch
from pyro.infer import RenyiELBO

from ppvae import registry
from ppvae.infer.estimators.base import PARTICLES, Estimator, Objective
from ppvae.registry import Param


@registry.register("estimator", "renyi")
class RenyiEstimator(Estimator):
    """Pyro RenyiELBO(alpha), kept for comparison; see the README for its limits.

    Its limits: no differentiable loss (it runs backward itself and reads the loss on the host
    every step), subsample and annealing scales applied inside the logsumexp (not a bound when
    the batch is subsampled), global latents drawn once for the whole batch, zero gradient for
    non-reparameterized sites at alpha = 0.
    """

    name = "renyi"

    def __init__(self, *, alpha: Annotated[float, Param("!= 1", "Renyi alpha (0: the IWAE bound)")] = 0.0,
                 num_particles: Annotated[int, PARTICLES] = 1, **kl_weight):
        super().__init__(**kl_weight)
        self.alpha, self.num_particles = alpha, num_particles
        self.elbo = RenyiELBO(alpha=alpha, num_particles=num_particles, vectorize_particles=num_particles > 1)

    def __call__(self, model, guide, x, y=None) -> Objective:
        with torch.no_grad():
            loss = torch.as_tensor(self.elbo.loss(self._weighted(model), self._weighted(guide), x, y))
        return Objective(loss, loss)

    def backward(self, model, guide, x, y, scale) -> torch.Tensor:
        loss = self.elbo.loss_and_grads(self._weighted(model), self._weighted(guide), x, y)
        for _, p in pyro.get_param_store().named_parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        return torch.as_tensor(loss)
