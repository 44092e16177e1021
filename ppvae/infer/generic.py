"""The generic path: per-datapoint importance log-weights of any model/guide pair, from Pyro traces.

``log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n)`` for k samples per data point, drawn in
one vectorized pass (a ``pyro.plate`` over particles outside the pair's own plates). Sites
inside the pair's ``pyro.plate("data", ...)`` are *local* and stay per data point; sites
outside it (Bayesian decoder weights) are *global* and are returned separately, because
they must enter an importance-weighted bound as their own term, outside the logsumexp.
Every pair and every Pyro handler works here; :mod:`ppvae.infer.fast` computes the same
numbers for the bundled pairs without the handlers, and checks itself against this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import detach, scale_and_mask
from pyro.poutine.util import site_is_subsample

from ppvae.errors import EstimatorError
from ppvae.sites import DATA_PLATE, PARTICLE_PLATE, is_latent, is_local


class LogWeights(NamedTuple):
    """Components of the log importance weights; ``log_w = obs + latent`` per data point."""

    obs: torch.Tensor  # [k, N] log p(x|z) summed over observed local sites
    latent: torch.Tensor  # [k, N] log p(z) - log q(z|x) summed over latent local sites
    global_: torch.Tensor  # [k] scaled log p(theta) - log q(theta) of global latent sites
    scale: float | torch.Tensor  # the common scale of local sites (subsampling), applied outside logsumexp
    guide_values: tuple[torch.Tensor, ...]  # reparameterized local latent values, for DReG's gradient hook

    @property
    def log_w(self) -> torch.Tensor:
        return self.obs + self.latent


def max_plate_nesting(model: Callable, guide: Callable, *args) -> int:
    """How many plate dimensions the pair uses (Pyro's rightmost-dims convention).

    Runs the pair once but restores the random state, so asking does not change later draws.
    """
    rng = pyro.util.get_rng_state()
    try:
        guide_tr, model_tr = one_pass(model, guide, *args)
    finally:
        pyro.util.set_rng_state(rng)
    return plate_nesting(guide_tr, model_tr)


def plate_nesting(*trs: poutine.Trace) -> int:
    """How many plate dimensions these traces use."""
    dims = [-f.dim for tr in trs for s in tr.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized]
    return max(dims, default=0)


def vectorize(fn: Callable, k: int, dim: int) -> Callable:
    def particles(*args):
        with pyro.plate(PARTICLE_PLATE, k, dim=dim):
            return fn(*args)

    return particles


def _reduce(lp: torch.Tensor, site: dict, k: int, nesting: int) -> torch.Tensor:
    """Sum a site's log-prob to ``[k, N]`` (local) or ``[k]`` (global)."""
    lp = scale_and_mask(lp, mask=site["mask"])
    lp = lp.reshape((1,) * (nesting + 1 - lp.dim()) + lp.shape)
    data = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    keep = [0] + ([nesting + 1 + data[0].dim] if data else [])
    others = [d for d in range(lp.dim()) if d not in keep]
    lp = lp.sum(others) if others else lp
    return lp.expand((k,) + lp.shape[1:])


def log_weights(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
                k: int = 1, nesting: int | None = None, beta: float = 1.0,
                detach_guide_params: bool = False) -> LogWeights:
    """Draw k samples per data point from the guide and score them under the model, through Pyro traces
    (see :func:`ppvae.infer.importance.log_weights` for the arguments)."""
    if nesting is None:
        nesting = max_plate_nesting(model, guide, x, y)
    guide_tr, model_tr = traces(model, guide, x, y, k, nesting)
    return from_traces(guide_tr, model_tr, x, k, nesting, beta, detach_guide_params)


def traces(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, k: int,
           nesting: int) -> tuple[poutine.Trace, poutine.Trace]:
    """:func:`one_pass` with k particles per data point, in a plate left of the pair's own."""
    dim = -(nesting + 1)
    return one_pass(vectorize(model, k, dim), vectorize(guide, k, dim), x, y)


def one_pass(model: Callable, guide: Callable, *args) -> tuple[poutine.Trace, poutine.Trace]:
    """A trace of the guide and one of the model replayed on it."""
    guide_tr = poutine.trace(guide).get_trace(*args)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    return guide_tr, model_tr


def site_log_prob(site: dict, k: int, nesting: int) -> torch.Tensor:
    """A sample site's log-density, masked and summed to ``[k, N]`` (local) or ``[k]`` (global)."""
    return _reduce(site["fn"].log_prob(site["value"]), site, k, nesting)


def from_traces(guide_tr: poutine.Trace, model_tr: poutine.Trace, x: torch.Tensor, k: int, nesting: int,
                beta: float, detach_guide_params: bool) -> LogWeights:
    """The generic path: log-weights from a guide trace with k particles (:func:`traces`; or, for k = 1, a
    trace without the particle plate, :func:`one_pass`) and the model replayed on it."""
    n = x.shape[0]
    obs = x.new_zeros(k, n)
    latent = x.new_zeros(k, n)
    global_ = x.new_zeros(k)
    scales, values, seen_data_plate = [], [], False

    def add(site: dict, sign: float, dist_fn=None) -> None:
        nonlocal obs, latent, global_, seen_data_plate
        fn = dist_fn or site["fn"]
        lp = sign * _reduce(fn.log_prob(site["value"]), site, k, nesting)
        if is_local(site):
            seen_data_plate = True
            scales.append(site["scale"])
            if site["is_observed"]:
                obs = obs + lp
            else:
                latent = latent + beta * lp
        else:
            global_ = global_ + site["scale"] * lp

    for site in model_tr.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            add(site, 1.0)
    for name, site in guide_tr.nodes.items():
        if not is_latent(site):
            continue
        local = is_local(site)
        if local and not site["fn"].has_rsample:
            raise EstimatorError(
                f"The guide samples {name!r} from {type(site['fn']).__name__}, which has no reparameterized "
                "sampler; ppvae's importance-weighted and one-draw estimators need reparameterized local latents. "
                "Use a reparameterizable family or the 'trace' estimator (score-function gradients)."
            )
        if local and detach_guide_params:
            add(site, -1.0, detach(site["fn"]))
        else:
            add(site, -1.0)
        if local and site["value"].requires_grad:
            values.append(site["value"])
    if not seen_data_plate:
        raise EstimatorError(
            f"The pair has no pyro.plate({DATA_PLATE!r}, ...) around its local sites; importance weights "
            "are per data point, so the model and guide must put z and x inside that plate."
        )
    scale = scales[0]
    if any(s is not scale and not torch.equal(torch.as_tensor(s), torch.as_tensor(scale)) for s in scales):
        raise EstimatorError("Local sites carry different scales; importance weights (and the one-draw objectives "
                             "dip_vae and wae_mmd) need one scale per data point.")
    return LogWeights(obs, latent, global_, scale, tuple(values))


__all__ = ["LogWeights", "max_plate_nesting", "plate_nesting", "vectorize", "log_weights", "traces", "one_pass",
           "site_log_prob", "from_traces"]
