"""The fast path: a bundled pair's log-densities computed from its parts, without Pyro's handlers.

For pairs whose classes say ``fast_path = True`` (:class:`~ppvae.sites.FastPath`: the bundled
:class:`~ppvae.models.VAEModel` and :class:`~ppvae.guides.VAEGuide`, and subclasses that keep
their ``forward``) Pyro's per-call machinery (handler stack, trace building, site
bookkeeping, argument validation) costs as much as a small network's arithmetic.
:func:`direct_pass` computes the same log-densities from the pair's parts --
``guide.posterior(x, y)``, ``model.prior()``, ``model.decode(z, y)`` -- with plain tensor calls,
and :func:`trace_elbo` / :func:`meanfield_elbo` the losses of Pyro's ``Trace_ELBO`` and
``TraceMeanField_ELBO`` from it.

It is used only when no Pyro handler is active (so ``poutine.trace``, ``scale``, ``replay``...
always see the real program) and only after a one-time check per pair that, on the same
draws, it reproduces the generic path's site structure and log-weights and Pyro's own
``differentiable_loss`` of both ELBOs; any other pair, or a pair that fails the check, takes
the generic path (:mod:`ppvae.infer.generic`). This module is the only place that computes
a pair's densities without Pyro.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import detach
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.runtime import am_i_wrapped
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution

from ppvae.infer.generic import LogWeights, from_traces, max_plate_nesting, traces
from ppvae.nn import eval_mode
from ppvae.sites import DATA_PLATE, LATENT, OBSERVED, PARTICLE_PLATE, is_latent


class Direct(NamedTuple):
    """One vectorized pass of a library pair, the pieces every estimator needs."""

    q: Distribution  # q(z|x), batch shape [N]
    prior: Distribution  # p(z), as the model returns it (not expanded)
    z: torch.Tensor  # [k, N, ...] reparameterized draws from q
    obs: torch.Tensor  # [k, N] log p(x|z)
    log_p: torch.Tensor  # [k, N] log p(z)
    log_q: torch.Tensor  # [k, N] log q(z|x), guide parameters detached when asked


_ENABLED = {"fast": True}
_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {parts key: bool}
TOLERANCE = 1e-4  # relative and absolute, on log-densities (float32 rounding of sums over pixels)


@contextlib.contextmanager
def generic_path() -> Iterator[None]:
    """Inside the block every pair takes the generic Pyro path (tests compare the two paths)."""
    before = _ENABLED["fast"]
    _ENABLED["fast"] = False
    try:
        yield
    finally:
        _ENABLED["fast"] = before


@contextlib.contextmanager
def _unvalidated() -> Iterator[None]:
    """Skip distribution argument checks: the one-time check ran them on the generic path, and
    each check is a host-side ``.all()`` on every parameter tensor."""
    before = Distribution._validate_args
    Distribution._validate_args = False
    try:
        yield
    finally:
        Distribution._validate_args = before


def direct_pair(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> bool:
    """Whether :func:`direct_pass` may stand in for the Pyro program here (see the module docstring).

    The first call for a pair (and again whenever one of its parts is swapped) runs the check.
    """
    if (not _ENABLED["fast"] or am_i_wrapped() or not getattr(model, "fast_path", False)
            or not getattr(guide, "fast_path", False)):
        return False
    key = (id(guide), *map(id, model.children()), *map(id, guide.children()))
    verdicts = _VERDICTS.setdefault(model, {})
    if key not in verdicts:
        verdicts.clear()
        verdicts[key] = _agrees_with_generic(model, guide, x, y)
    return verdicts[key]


def direct_posterior(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    """q(z|x) of a :func:`direct_pair`'s guide, batch shape [N]."""
    with _unvalidated():
        return guide.posterior(x, y)


def direct_pass(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int = 1,
                detach_guide_params: bool = False, z: torch.Tensor | None = None,
                q: Distribution | None = None) -> Direct:
    """Draw k samples per data point (or score the given ``z``) straight from the pair's parts.

    Only for pairs :func:`direct_pair` accepts: it computes what the generic path computes
    for them, without Pyro's handlers. ``q`` is :func:`direct_posterior` of the same points,
    when the caller scores several chunks of samples of one batch (the evaluator).
    """
    with _unvalidated():
        if q is None:
            q = guide.posterior(x, y)
        if z is None:
            z = q.rsample((k,))
        prior = model.prior()
        log_q = _log_prob(q, z, detach_params=detach_guide_params)
        return Direct(q, prior, z, _log_prob(model.decode(z, y), x), _log_prob(prior, z), log_q)


def _log_prob(fn: Distribution, value: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
    """``fn.log_prob(value)`` (with ``fn``'s parameters detached if asked); for Bernoulli logits
    and diagonal Normals with one event dimension, in the form a hand-written VAE uses:
    constants and signs applied after the sum over the event, so each [k, N, D] tensor is
    passed over fewer times, and no deep copy of the distribution to detach it."""
    if type(fn) in _INDEPENDENT and fn.reinterpreted_batch_ndims == 1:
        base = fn.base_dist
        if type(base) in _BERNOULLI and "logits" in vars(base):
            logits = base.logits.detach() if detach_params else base.logits
            logits, value = torch.broadcast_tensors(logits, value)
            return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
        if type(base) in _NORMAL:
            loc, scale = (base.loc.detach(), base.scale.detach()) if detach_params else (base.loc, base.scale)
            half_log_2pi = 0.5 * math.log(2 * math.pi) * value.shape[-1]
            return -0.5 * ((value - loc) / scale).pow(2).sum(-1) - (scale.log().sum(-1) + half_log_2pi)
    return (detach(fn) if detach_params else fn).log_prob(value)


_INDEPENDENT = (pyro.distributions.Independent, torch.distributions.Independent)
_BERNOULLI = (pyro.distributions.Bernoulli, torch.distributions.Bernoulli)
_NORMAL = (pyro.distributions.Normal, torch.distributions.Normal)


def direct_log_weights(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor,
                       q: Distribution) -> LogWeights:
    """Log-weights of given draws ``z`` [k, N, ...] of a :func:`direct_pair`, with ``q`` its posterior of ``x``."""
    d = direct_pass(model, guide, x, y, z=z, q=q)
    return LogWeights(d.obs, d.log_p - d.log_q, x.new_zeros(z.shape[0]), 1.0, ())


def _plain_site(site: dict, observed: bool) -> bool:
    """A site inside the data (and particle) plate only, unscaled, unmasked."""
    frames = {f.name for f in site["cond_indep_stack"]}
    return (site["is_observed"] == observed and DATA_PLATE in frames and frames <= {DATA_PLATE, PARTICLE_PLATE}
            and site["mask"] is None and isinstance(site["scale"], float) and site["scale"] == 1.0)


def _mean_particles(total: torch.Tensor, d: Direct) -> torch.Tensor:
    """A sum over particles and data points, averaged over the particles (as Pyro's ELBOs do)."""
    n = d.obs.shape[0]
    return total if n == 1 else total / n


def trace_elbo(d: Direct, beta: float = 1.0) -> torch.Tensor:
    """Pyro's ``Trace_ELBO`` from a direct pass: Monte Carlo KL, summed over the batch, averaged over particles."""
    latent = d.log_p - d.log_q
    return _mean_particles((d.obs + (latent if beta == 1.0 else beta * latent)).sum(), d)


def meanfield_elbo(d: Direct, beta: float = 1.0) -> torch.Tensor:
    """Pyro's ``TraceMeanField_ELBO`` from a direct pass: closed-form KL where one is registered, else the
    Monte Carlo term."""
    try:
        kl = kl_divergence(d.q, d.prior.expand(d.q.batch_shape)).sum()
    except NotImplementedError:
        return trace_elbo(d, beta)
    return _mean_particles(d.obs.sum(), d) - (kl if beta == 1.0 else beta * kl)


@torch.no_grad()
def _agrees_with_generic(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None) -> bool:
    """Run both paths on the first few data points and the same draws: same sites, same log-weights,
    and the same ``Trace_ELBO`` and ``TraceMeanField_ELBO`` losses as Pyro's ``differentiable_loss``?

    Errors in the pair itself surface from the generic path as they would without the check. It runs
    in evaluation mode and restores the random state, so it leaves the pair as it found it (in
    training mode its passes would move batch-norm running statistics).
    """
    rows = slice(0, min(4, x.shape[0]))
    xs, ys, k = x[rows], None if y is None else y[rows], 2
    rng = pyro.util.get_rng_state()
    try:
        with eval_mode(model, guide):
            return _compare_paths(model, guide, xs, ys, k)
    finally:
        pyro.util.set_rng_state(rng)


def _compare_paths(model: Callable, guide: Callable, xs: torch.Tensor, ys: torch.Tensor | None, k: int) -> bool:
    """The check itself: the generic path's sites and numbers against the fast path's on the same draws."""
    nesting = max_plate_nesting(model, guide, xs, ys)
    guide_tr, model_tr = traces(model, guide, xs, ys, k, nesting)
    guide_sites = {name: s for name, s in guide_tr.nodes.items() if is_latent(s)}
    model_sites = {name: s for name, s in model_tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    if (list(guide_sites) != [LATENT] or sorted(model_sites) != sorted([OBSERVED, LATENT])
            or not guide_sites[LATENT]["fn"].has_rsample or not _plain_site(guide_sites[LATENT], False)
            or not _plain_site(model_sites[LATENT], False) or not _plain_site(model_sites[OBSERVED], True)):
        return False
    generic = from_traces(guide_tr, model_tr, xs, k, nesting, 1.0, False)
    one = poutine.trace(guide).get_trace(xs, ys)  # one draw, for the losses
    replayed = poutine.replay(guide, trace=one)
    losses = [elbo.differentiable_loss(model, replayed, xs, ys) for elbo in (Trace_ELBO(), TraceMeanField_ELBO())]
    try:
        direct = direct_pass(model, guide, xs, ys, k=k, z=guide_sites[LATENT]["value"])
        d1 = direct_pass(model, guide, xs, ys, z=one.nodes[LATENT]["value"].unsqueeze(0))
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    close = lambda a, b: a.shape == b.shape and torch.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE)  # noqa: E731
    return (close(direct.obs, generic.obs) and close(direct.log_p - direct.log_q, generic.latent)
            and close(-trace_elbo(d1), losses[0]) and close(-meanfield_elbo(d1), losses[1]))


__all__ = ["Direct", "TOLERANCE", "generic_path", "direct_pair", "direct_posterior", "direct_pass",
           "direct_log_weights", "trace_elbo", "meanfield_elbo"]
