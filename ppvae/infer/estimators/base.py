"""The interface every estimator implements, and the KL weight they share; Pyro's ELBOs behind it."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Annotated, NamedTuple

import pyro
import torch
from pyro import poutine

from ppvae.errors import EstimatorError
from ppvae.infer import fast, generic
from ppvae.registry import Param
from ppvae.sites import LATENT, is_latent, is_local


class Objective(NamedTuple):
    surrogate: torch.Tensor  # differentiate this
    loss: torch.Tensor  # -bound summed over the batch, detached


class KLWeight(poutine.messenger.Messenger):
    """Multiply the log-density of every latent site by ``beta``: ELBO = E log p(x|z) - beta KL."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


PARTICLES = Param(">= 1", "samples per data point, vectorized")


class Estimator(abc.ABC):
    """Base class: the KL weight ``beta`` (annealed linearly from ``beta_start`` over ``anneal_epochs``
    by the trainer) and notes for ``metrics.json``."""

    name = ""

    def __init__(self, *, beta: Annotated[float, Param(">= 0", "KL weight (beta-VAE)")] = 1.0,
                 beta_start: Annotated[float, Param(">= 0", "KL weight at step 0 when annealing")] = 1.0,
                 anneal_epochs: Annotated[int, Param(">= 0", "epochs of linear KL annealing from beta_start to "
                                                             "beta")] = 0):
        self.beta_end, self.beta_start, self.anneal_epochs = beta, beta_start, anneal_epochs
        self.beta = beta_start if anneal_epochs else beta
        self.notes: dict[str, object] = {}

    def beta_at(self, step: int, steps_per_epoch: int) -> float:
        """The KL weight at optimizer step ``step``."""
        if not self.anneal_epochs:
            return self.beta_end
        t = min(1.0, step / (self.anneal_epochs * steps_per_epoch))
        return self.beta_start + t * (self.beta_end - self.beta_start)

    @abc.abstractmethod
    def __call__(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> Objective:
        """The objective for one batch."""

    def check(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Inspect the pair once before training; raise EstimatorError if it cannot be used."""

    def backward(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None,
                 scale: float) -> torch.Tensor:
        """Accumulate gradients of ``scale * loss``; return the (unscaled, detached) loss."""
        obj = self(model, guide, x, y)
        (scale * obj.surrogate).backward()
        return obj.loss

    def _weighted(self, fn: Callable) -> Callable:
        return fn if self.beta == 1.0 else KLWeight(self.beta)(fn)


class PyroELBO(Estimator):
    """Wraps a Pyro ELBO object; the KL weight enters as a scale on latent sites.

    For the bundled pairs the same loss is computed from one pass of the fast path
    (:mod:`ppvae.infer.fast`, which checks itself against Pyro's loss once per pair).
    """

    elbo_class: type[pyro.infer.ELBO]
    fast_elbo: Callable[[fast.Direct, float], torch.Tensor]

    def __init__(self, *, num_particles: Annotated[int, PARTICLES] = 1, **kl_weight):
        super().__init__(**kl_weight)
        self.num_particles = num_particles
        self.elbo = self.elbo_class(num_particles=num_particles, vectorize_particles=num_particles > 1)

    def __call__(self, model, guide, x, y=None) -> Objective:
        if fast.direct_pair(model, guide, x, y):
            loss = -self.fast_elbo(fast.direct_pass(model, guide, x, y, k=self.num_particles), self.beta)
        else:
            loss = self.elbo.differentiable_loss(self._weighted(model), self._weighted(guide), x, y)
        return Objective(loss, loss.detach())


def check_one_local_latent(guide: Callable, x: torch.Tensor, y: torch.Tensor | None, estimator: str) -> None:
    """Refuse a guide with latent sites besides the local ``z`` (decoder weights, a second layer): the
    objectives built on :func:`one_draw` have terms for z and x only."""
    others = [n for n, site in poutine.trace(guide).get_trace(x, y).nodes.items()
              if is_latent(site) and (n != LATENT or not is_local(site))]
    if others:
        raise EstimatorError(f"estimator {estimator!r} scores one local latent z and the data, but the guide also "
                             f"samples {others}; use it with a one-layer pair without Bayesian weights, or use "
                             "'trace' / 'meanfield' / 'iwae'.")


def one_draw(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> fast.Direct:
    """One draw z ~ q(z|x) per point with q, p(z) and log p(x|z) [1, N], for objectives that need q's parameters
    or the codes themselves: the fast path's single pass for a bundled pair, else Pyro traces of the guide and
    of the model replayed on it (a pair :func:`check_one_local_latent` accepts)."""
    if fast.direct_pair(model, guide, x, y):
        return fast.direct_pass(model, guide, x, y)
    guide_tr, model_tr = generic.one_pass(model, guide, x, y)
    nesting = generic.plate_nesting(guide_tr, model_tr)
    lw = generic.from_traces(guide_tr, model_tr, x, k=1, nesting=nesting, beta=1.0, detach_guide_params=False)
    if not torch.equal(torch.as_tensor(lw.scale, dtype=torch.float64), torch.ones((), dtype=torch.float64)):
        raise EstimatorError("The pair scales its data-point sites (poutine.scale or a subsampled data plate); the "
                             "one-draw objectives (dip_vae, wae_mmd) score whole, unscaled batches: remove the scale "
                             "or use 'trace' / 'meanfield' / 'iwae'.")
    latent = lambda tr: generic.site_log_prob(tr.nodes[LATENT], 1, nesting)  # noqa: E731
    q, z, prior = guide_tr.nodes[LATENT]["fn"], guide_tr.nodes[LATENT]["value"], model_tr.nodes[LATENT]["fn"]
    return fast.Direct(q, prior, z[None], lw.obs, latent(model_tr), latent(guide_tr))


__all__ = ["Objective", "KLWeight", "Estimator", "PyroELBO", "PARTICLES", "check_one_local_latent", "one_draw"]
