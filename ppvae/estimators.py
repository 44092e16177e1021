"""ELBO estimators, chosen by name, behind one interface.

Every estimator turns ``(model, guide, x, y)`` into an :class:`Objective`: a scalar to
differentiate (``surrogate``) and the value of the bound it estimates, both summed over
the batch and negated (a loss, in nats). The trainer scales the surrogate by 1/batch size
before ``backward`` so learning rates do not depend on the batch size.

============  ==============================================================================
name          what it is
============  ==============================================================================
trace         Pyro ``Trace_ELBO``: Monte Carlo KL ("estimator A" of Kingma & Welling)
meanfield     Pyro ``TraceMeanField_ELBO``: closed-form KL where one is registered
              ("estimator B"); a Monte Carlo fallback is reported, or refused with strict
renyi         Pyro ``RenyiELBO(alpha)``, kept for comparison. Its limits: no differentiable
              loss (it runs backward itself and syncs with the host every step), subsample
              and annealing scales applied inside the logsumexp, global latents drawn once
              for the whole batch, zero gradient for non-reparameterized sites at alpha = 0
iwae          ppvae's importance-weighted bound: per-datapoint log-weights, scales and
              global-latent terms outside the logsumexp, gradient ``standard``, ``stl``
              (sticking the landing) or ``dreg`` (doubly reparameterized)
============  ==============================================================================
"""

from __future__ import annotations

import abc
import logging
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from ppvae.config import EstimatorConfig
from ppvae.errors import EstimatorError
from ppvae.importance import Direct, direct_pair, direct_pass, is_latent, iwae_bound, log_weights, max_plate_nesting

log = logging.getLogger(__name__)


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


class Estimator(abc.ABC):
    """Base class: holds the KL weight ``beta`` (the trainer anneals it) and notes for metrics."""

    name = ""
    differentiable = True

    def __init__(self, cfg: EstimatorConfig):
        self.cfg = cfg
        self.beta = cfg.beta_start if cfg.anneal_epochs else cfg.beta
        self.notes: dict[str, object] = {}

    @abc.abstractmethod
    def __call__(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> Objective:
        """The objective for one batch."""

    def check(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Inspect the pair once before training; raise EstimatorError if it cannot be used."""

    def backward(self, model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Accumulate gradients of ``scale * loss``; return the (unscaled, detached) loss."""
        obj = self(model, guide, x, y)
        (scale * obj.surrogate).backward()
        return obj.loss

    def _weighted(self, fn: Callable) -> Callable:
        return fn if self.beta == 1.0 else KLWeight(self.beta)(fn)

    def _beta_times(self, latent: torch.Tensor) -> torch.Tensor:
        return latent if self.beta == 1.0 else self.beta * latent


def _mean_particles(total: torch.Tensor, d: Direct) -> torch.Tensor:
    """A sum over particles and data points, averaged over the particles (as Pyro's ELBOs do)."""
    n = d.obs.shape[0]
    return total if n == 1 else total / n


class _PyroELBO(Estimator):
    """Wraps a Pyro ELBO object; the KL weight enters as a scale on latent sites.

    For library pairs the same loss is computed from one :func:`~ppvae.importance.direct_pass`
    (see :mod:`ppvae.importance`); ``tests/test_direct_path.py`` checks that both paths agree.
    """

    @abc.abstractmethod
    def _make(self) -> pyro.infer.ELBO:
        """The Pyro ELBO object this estimator wraps."""

    @abc.abstractmethod
    def _elbo(self, d: Direct) -> torch.Tensor:
        """The ELBO summed over the batch, averaged over particles, from a direct pass."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__(cfg)
        self.elbo = self._make()

    def __call__(self, model, guide, x, y=None) -> Objective:
        if direct_pair(model, guide, x, y):
            loss = -self._elbo(direct_pass(model, guide, x, y, k=self.cfg.num_particles))
        else:
            loss = self.elbo.differentiable_loss(self._weighted(model), self._weighted(guide), x, y)
        return Objective(loss, loss.detach())


class TraceEstimator(_PyroELBO):
    """Pyro's Trace_ELBO: Monte Carlo KL (Kingma & Welling's estimator A), particles vectorized."""

    name = "trace"

    def _make(self):
        n = self.cfg.num_particles
        return Trace_ELBO(num_particles=n, vectorize_particles=n > 1)

    def _elbo(self, d: Direct) -> torch.Tensor:
        return _mean_particles((d.obs + self._beta_times(d.log_p - d.log_q)).sum(), d)


class MeanFieldEstimator(_PyroELBO):
    """Pyro's TraceMeanField_ELBO: closed-form KL where registered (estimator B); fallbacks reported."""

    name = "meanfield"

    def _make(self):
        n = self.cfg.num_particles
        return TraceMeanField_ELBO(num_particles=n, vectorize_particles=n > 1)

    def _elbo(self, d: Direct) -> torch.Tensor:
        """As Pyro's: closed-form KL where one is registered, else the Monte Carlo term."""
        try:
            kl = kl_divergence(d.q, d.prior.expand(d.q.batch_shape)).sum()
        except NotImplementedError:
            return _mean_particles((d.obs + self._beta_times(d.log_p - d.log_q)).sum(), d)
        return _mean_particles(d.obs.sum(), d) - self._beta_times(kl)

    def check(self, model, guide, x, y=None) -> None:
        """Find latent sites without a registered closed-form KL: warn, record, or refuse."""
        guide_tr = poutine.trace(guide).get_trace(x, y)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
        fallback = []
        for name, site in guide_tr.nodes.items():
            if not is_latent(site) or name not in model_tr.nodes:
                continue
            try:
                kl_divergence(site["fn"], model_tr.nodes[name]["fn"])
            except NotImplementedError:
                fallback.append(f"{name}: {_family(site['fn'])} || {_family(model_tr.nodes[name]['fn'])}")
        self.notes["kl_monte_carlo_sites"] = fallback
        if fallback:
            msg = ("meanfield: no closed-form KL is registered for " + "; ".join(fallback) +
                   ". TraceMeanField_ELBO falls back to a Monte Carlo KL for these sites.")
            if self.cfg.strict:
                raise EstimatorError(msg + " Set estimator.strict = false to accept the fallback, or use 'trace'.")
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)


def _family(d) -> str:
    """A distribution's name through ``to_event``: ``Independent(Normal)`` reads ``Normal``."""
    while isinstance(d, torch.distributions.Independent):
        d = d.base_dist
    return type(d).__name__


class RenyiEstimator(Estimator):
    """Pyro's RenyiELBO, as a user would otherwise pick it (see the module docstring for its limits)."""

    name = "renyi"
    differentiable = False

    def __init__(self, cfg: EstimatorConfig):
        super().__init__(cfg)
        n = cfg.num_particles
        self.elbo = RenyiELBO(alpha=cfg.alpha, num_particles=n, vectorize_particles=n > 1)

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


class IWAEEstimator(Estimator):
    """Importance-weighted bound with k samples per data point (Burda et al. 2015).

    objective = scale * sum_n [logsumexp_k log w_kn - log k] + mean_k global_k

    Gradients: ``standard`` differentiates the bound; ``stl`` drops the score term of
    q (guide parameters detached inside log q; Roeder et al. 2017); ``dreg`` additionally
    weights the encoder's path gradient by the squared normalized weights (Tucker et al.
    2018), implemented as a gradient hook on the reparameterized samples. DReG assumes
    each guide latent is not an input to another guide site (one stochastic layer).
    """

    name = "iwae"

    def __init__(self, cfg: EstimatorConfig):
        super().__init__(cfg)
        self._nesting: dict[tuple[int, int], int] = {}

    def _nesting_of(self, model, guide, x, y) -> int:
        key = (id(model), id(guide))
        if key not in self._nesting:
            self._nesting[key] = max_plate_nesting(model, guide, x, y)
        return self._nesting[key]

    def check(self, model, guide, x, y=None) -> None:
        """Refuse global latent sites (outside the data plate) drawn anew for each of the k samples.

        With ``log p(theta) - log q(theta)`` outside the logsumexp, the objective is a lower bound
        on log p(x) only when the k samples of every data point share one draw of theta (as
        ppvae's Bayesian decoder guide does); the random state is restored after the check.
        """
        rng = pyro.util.get_rng_state()
        try:
            lw = log_weights(model, guide, x, y, k=2, nesting=self._nesting_of(model, guide, x, y))
        finally:
            pyro.util.set_rng_state(rng)
        if not torch.equal(lw.global_[0], lw.global_[1]):
            raise EstimatorError(
                "iwae: the guide draws its global latent sites (outside pyro.plate('data')) separately for "
                "each of the k samples, and with their log p - log q outside the logsumexp that is not a bound "
                "on log p(x). Draw them once per call and share the draw across the enclosing plates (see "
                "ppvae.guides.bayesian.WeightPosterior), or use the 'trace' estimator.")

    def __call__(self, model, guide, x, y=None) -> Objective:
        k, gradient = self.cfg.k, self.cfg.gradient
        lw = log_weights(model, guide, x, y, k=k, nesting=self._nesting_of(model, guide, x, y),
                         beta=self.beta, detach_guide_params=gradient in ("stl", "dreg"))
        log_w = lw.log_w
        bound = lw.scale * (torch.logsumexp(log_w, 0) - math.log(k)).sum() + lw.global_.mean()
        if gradient != "dreg":
            return Objective(-bound, -bound.detach())
        w = torch.softmax(log_w.detach(), dim=0)
        for z in lw.guide_values:
            w_z = w.reshape(w.shape + (1,) * (z.dim() - w.dim()))
            z.register_hook(lambda g, w_z=w_z: g * w_z)
        surrogate = lw.scale * (w * log_w).sum() + lw.global_.mean()
        return Objective(-surrogate, -bound.detach())


ESTIMATORS: dict[str, type[Estimator]] = {
    "trace": TraceEstimator,
    "meanfield": MeanFieldEstimator,
    "renyi": RenyiEstimator,
    "iwae": IWAEEstimator,
}


def make_estimator(cfg: EstimatorConfig) -> Estimator:
    """The estimator an ``[estimator]`` section names."""
    return ESTIMATORS[cfg.name](cfg)


__all__ = ["Objective", "Estimator", "ESTIMATORS", "make_estimator", "KLWeight", "iwae_bound"]
