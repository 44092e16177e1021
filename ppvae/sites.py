"""The pair contract in code: site names, plates, and the helpers that query any model/guide pair.

A pair is ``model(x, y=None)`` / ``guide(x, y=None)`` with one ``pyro.plate(DATA_PLATE, N)``
around the local latent site ``"z"`` and the observed site ``"x"``. Everything in ppvae that
reads a pair (estimators, evaluation, figures, analyses) goes through these names and
helpers, so a user's pair needs no extra methods. This module sits at the bottom: every
other module may import it, and it imports only Pyro and torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import get_plates
from pyro.poutine.util import site_is_subsample

LATENT = "z"  # the local latent site (the one next to the data, with two stochastic layers)
OBSERVED = "x"
DATA_PLATE = "data"
PARTICLE_PLATE = "_ppvae_particles"  # the vectorized plate over importance samples / particles


def is_latent(site: dict) -> bool:
    """A sampled (not observed) site, other than a plate's subsample indices."""
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def is_local(site: dict) -> bool:
    """A site inside the data plate: one value per data point."""
    return any(f.name == DATA_PLATE for f in site["cond_indep_stack"])


def local_latents(trace: poutine.Trace) -> list[str]:
    """The trace's latent sites inside the data plate (one value per data point)."""
    return [n for n, site in trace.nodes.items() if is_latent(site) and is_local(site)]


def upper_local_latents(trace: poutine.Trace) -> list[str]:
    """The trace's local latent sites besides ``z``: a second stochastic layer, under which p(z) is
    conditional (p(z | z_top)), not a prior."""
    return [n for n in local_latents(trace) if n != LATENT]


def plate_shape() -> torch.Size:
    """Batch shape the enclosing vectorized plates give a site sampled here (e.g. ``[k, 1]`` for particles)."""
    frames = [f for f in get_plates() if f.vectorized and f.dim is not None]
    shape = [1] * max((-f.dim for f in frames), default=0)
    for f in frames:
        shape[f.dim] = f.size
    return torch.Size(shape)


class Preset(Messenger):
    """Give latent sites a value unless an outer handler (replay, condition) supplies one.

    Being the innermost handler, it sets the value first; outer replay or condition
    handlers overwrite it, and Pyro does not draw a site that already has a value.
    """

    def __init__(self, values: dict[str, torch.Tensor]):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is None and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


def batch_like(x_template: torch.Tensor, n: int) -> torch.Tensor:
    """n copies of the first row of ``x_template``: the data argument when only the latent matters."""
    return x_template[:1].expand((n,) + x_template.shape[1:])


def rows(t: torch.Tensor | None, span: slice) -> torch.Tensor | None:
    """``t[span]``, or None for absent labels."""
    return None if t is None else t[span]


@torch.no_grad()
def posterior_mean(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E_q[z|x] read off the guide's ``z`` site (its distribution's mean)."""
    return _site_mean(poutine.trace(guide).get_trace(x, y).nodes[LATENT], guide, x, y)


def _site_mean(site: dict, guide: Callable, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    try:
        return site["fn"].mean
    except NotImplementedError:  # a family without a closed-form mean: average samples
        return posterior_draws(guide, x, y, 64).mean(0)


@torch.no_grad()
def posterior_draws(guide: Callable, x: torch.Tensor, y: torch.Tensor | None, n: int) -> torch.Tensor:
    """``n`` draws of z ~ q(z|x), stacked along a new first dimension (one run of the guide each)."""
    return torch.stack([poutine.trace(guide).get_trace(x, y).nodes[LATENT]["value"] for _ in range(n)])


def posterior_means(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None,
                    batch_size: int = 2000) -> torch.Tensor:
    """E_q[z|x_n] for every row of ``x``, in batches."""
    return torch.cat([posterior_mean(guide, x[s], rows(y, s)) for s in spans(x.shape[0], batch_size)])


@torch.no_grad()
def posterior_codes(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None,
                    batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[z|x_n] and one draw z_n ~ q(z|x_n) for every row of ``x``, from one run of the guide per batch (and,
    for a family without a closed-form mean, the 64 draws that estimate it)."""
    means, draws = [], []
    for s in spans(x.shape[0], batch_size):
        site = poutine.trace(guide).get_trace(x[s], rows(y, s)).nodes[LATENT]
        draws.append(site["value"])
        means.append(_site_mean(site, guide, x[s], rows(y, s)))
    return torch.cat(means), torch.cat(draws)


def spans(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def model_site(model: Callable, name: str, z: torch.Tensor, x_template: torch.Tensor, y: torch.Tensor | None = None,
               fixed: dict[str, torch.Tensor] | None = None) -> torch.distributions.Distribution:
    """The distribution at the model's site ``name`` with ``z`` (and the sites in ``fixed``, e.g. decoder
    weights) fixed: p(z) for ``"z"``, p(x|z) for ``"x"``."""
    data = {LATENT: z} | (fixed or {})
    tr = poutine.trace(poutine.condition(model, data=data)).get_trace(batch_like(x_template, z.shape[0]), y)
    return tr.nodes[name]["fn"]


def decode_mean(model: Callable, z: torch.Tensor, x_template: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z] from the model's ``x`` site with ``z`` fixed (works for any pair)."""
    return model_site(model, OBSERVED, z, x_template, y).mean


@torch.no_grad()
def prior_draws(model: Callable, x_template: torch.Tensor, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """n draws of z from the model's prior (its ``z`` site with x unobserved)."""
    tr = poutine.trace(poutine.uncondition(model)).get_trace(batch_like(x_template, n), y)
    return tr.nodes[LATENT]["value"]


@torch.no_grad()
def prior_samples(model: Callable, x_template: torch.Tensor, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean images E[x|z] for z drawn from the prior (the usual "samples" figure)."""
    tr = poutine.trace(poutine.uncondition(model)).get_trace(batch_like(x_template, n), y)
    return tr.nodes[OBSERVED]["fn"].mean


class FastPath:
    """Mixin of a model or guide whose densities can be computed from its parts without running
    its Pyro program: a model with ``prior()`` and ``decode(z, y)``, a guide with ``posterior(x, y)``
    (ppvae.infer's fast path, which checks itself against the program once per pair). The class
    that writes the program says ``fast_path = True``.

    A subclass that overrides ``forward`` writes a new program, so it loses the fast path
    unless it sets ``fast_path = True`` itself.
    """

    fast_path: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in vars(cls) and "fast_path" not in vars(cls):
            cls.fast_path = False
