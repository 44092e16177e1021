"""ArviZ behind one small module: every ArviZ call in ppvae goes through here.

ArviZ 0.23.x (what pip resolves on Python 3.11) has ``psislw``, ``from_dict``, ``rhat``,
``ess``, ``plot_forest`` and ``plot_khat`` at the top level. ArviZ 1.x (Python >= 3.12)
moved PSIS to arviz-stats, whose ``psislw`` takes log-*likelihoods* and negates them, and
moved the plots to arviz-plots with a different interface. The numbers (k-hat, R-hat,
ESS) work with both; the InferenceData objects and figures of ``ppvae compare`` need the
0.x interface and say so. ArviZ is imported on first use: it takes seconds to import,
and most commands never need it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

from ppvae import plots
from ppvae.errors import PPVAEError
from ppvae.plots import plt

if TYPE_CHECKING:
    from arviz import InferenceData

KHAT_GOOD = 0.7  # above: the importance-sampling estimate is unreliable (Vehtari et al. 2024)
KHAT_BAD = 1.0  # above: the weights have no finite mean; the estimate is meaningless
# PSIS fits a generalized Pareto tail to the largest ceil(min(k/5, 3 sqrt(k))) weights and
# needs at least 5 of them: k >= 21 importance samples.
KHAT_MIN_SAMPLES = 21


class ArviZVersionError(PPVAEError):
    """The installed ArviZ lacks an interface ppvae needs."""


@functools.cache
def arviz() -> ModuleType:
    """The ``arviz`` module, imported once, without its import-time FutureWarning banner."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def arviz_major() -> int:
    return int(arviz().__version__.split(".")[0])


def _legacy(what: str) -> ModuleType:
    """ArviZ 0.x, for the calls whose interface changed in 1.0."""
    az = arviz()
    if arviz_major() >= 1:
        raise ArviZVersionError(
            f"{what} uses the ArviZ 0.x interface, but arviz {az.__version__} is installed. "
            "Install the 0.x line next to ppvae: pip install 'arviz>=0.23,<1'."
        )
    return az


def _psis_khat(log_w: np.ndarray) -> np.ndarray:
    if arviz_major() >= 1:
        from arviz_stats.base import array_stats  # ArviZ >= 1.0: PSIS lives in arviz-stats

        _, khat = array_stats.psislw(-log_w, r_eff=1.0, axis=-1)  # it negates its input (log-likelihoods)
    else:
        _, khat = arviz().psislw(log_w, 1.0)
    return np.asarray(khat, dtype=np.float64)


def pareto_khat(log_w: np.ndarray, atol: float | np.ndarray = 0.0) -> np.ndarray:
    """Pareto k-hat of each row of ``log_w`` [N, k] (log importance weights, samples last).

    k-hat < 0.5: the weights have finite variance; < 0.7: importance sampling is reliable;
    > 0.7: the proposal (the guide) misses mass of the posterior and the estimate of
    log p(x) is unreliable (Vehtari et al. 2024). Independent samples, so r_eff = 1.
    Special rows: fewer than ``KHAT_MIN_SAMPLES`` samples, or a non-finite maximum,
    give NaN; weights equal to within ``atol`` (per row, in nats: a perfect proposal up to
    rounding) give -inf, a bounded tail, rather than a fit to rounding noise.
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    out = np.full(log_w.shape[:-1], np.nan)
    if log_w.shape[-1] < KHAT_MIN_SAMPLES:
        return out
    top = log_w.max(axis=-1)
    usable = np.isfinite(top) & ~np.isnan(log_w).any(axis=-1)
    constant = usable & (top - log_w.min(axis=-1) <= atol)
    fit = usable & ~constant
    if fit.any():
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[fit] = _psis_khat(log_w[fit])
    out[constant] = -np.inf
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ArviZ's own chatter: a logged warning per single-chain R-hat (ppvae reports NaN
    instead), its and pandas' deprecation notices about ArviZ's code, and matplotlib's."""
    logger = logging.getLogger("arviz")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            yield
    finally:
        logger.setLevel(old)


def rhat_ess(draws: np.ndarray) -> tuple[float, float]:
    """Rank-normalized split R-hat and bulk ESS of ``draws`` [chains, draws].

    R-hat needs at least two chains; both are NaN for draws that are not all finite.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if not np.isfinite(draws).all():
        return float("nan"), float("nan")
    if arviz_major() >= 1:
        from arviz_stats.base import array_stats

        rhat = array_stats.rhat(draws, chain_axis=-2, draw_axis=-1) if draws.shape[0] > 1 else np.nan
        ess = array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk")
    else:
        with _quiet():
            rhat = arviz().rhat(draws) if draws.shape[0] > 1 else np.nan
            ess = arviz().ess(draws, method="bulk")
    return float(rhat), float(ess)


def inference_data(posterior: dict[str, np.ndarray], attrs: dict | None = None) -> InferenceData:
    """An ``InferenceData`` whose posterior holds ``[chains, draws]`` arrays (chains = seeds)."""
    return _legacy("ppvae compare's InferenceData").from_dict(posterior=posterior, attrs=attrs or {})


def forest_plot(datasets: Sequence[InferenceData], labels: Sequence[str], var_name: str, path: Path, *,
                title: str = "", hdi_prob: float = 0.95) -> Path:
    """One row per configuration: the pooled draws of all its chains, with R-hat and ESS columns."""
    az = _legacy("The forest plot")
    with _quiet():
        axes = az.plot_forest(list(datasets), model_names=list(labels), var_names=[var_name], combined=True,
                              hdi_prob=hdi_prob, r_hat=True, ess=True, figsize=(9, 1.2 + 0.5 * len(labels)))
    fig = np.ravel(axes)[0].figure
    if title:
        fig.suptitle(title, y=1.0 + 0.35 / fig.get_figheight())
    return plots.save(fig, path)


def khat_plot(khats: Sequence[np.ndarray], titles: Sequence[str], path: Path) -> Path:
    """Per-datapoint Pareto k-hat, one panel per run, with the 0.7 and 1.0 thresholds."""
    az = _legacy("The k-hat plot")
    n = len(khats)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, khat, title in zip(axes.flat, khats, titles):
        khat = np.asarray(khat, dtype=np.float64)
        finite = np.isfinite(khat)
        if finite.any():
            with _quiet():  # ArviZ would like ELPDData; an array is right for independent draws
                az.plot_khat(khat[finite], ax=ax, show_hlines=True, show_bins=True)
        hidden = int((~finite).sum())
        ax.set_title(title + (f"\n({hidden} points without a finite k-hat)" if hidden else ""), fontsize=9)
        ax.set_ylabel("Pareto k-hat")
        ax.set_xlabel("test point")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return plots.save(fig, path)


def compare_pointwise(log_lik: dict[str, np.ndarray]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """ArviZ ``loo`` of each model's pointwise log-likelihood ``[S, N]`` (S independent draws, e.g. of
    decoder weights from a variational posterior: one chain, relative efficiency 1), and ArviZ's
    ``compare`` table of them. Returns the table as rows and each model's per-point Pareto k-hat.
    """
    az = _legacy("The pointwise comparison")
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ warns about high k-hat; the k-hats are returned
        loos = {name: az.loo(az.from_dict(log_likelihood={"x": np.asarray(ll)[None]}), pointwise=True, reff=1.0)
                for name, ll in log_lik.items()}
        table = az.compare(loos, ic="loo")
    def plain(v):
        return bool(v) if isinstance(v, (bool, np.bool_)) else float(v) if isinstance(v, (int, float, np.number)) else v

    rows = [{"model": name} | {key: plain(v) for key, v in row.items()} for name, row in table.iterrows()]
    return rows, {name: np.asarray(loo.pareto_k) for name, loo in loos.items()}


__all__ = ["ArviZVersionError", "KHAT_GOOD", "KHAT_BAD", "arviz", "arviz_major", "KHAT_MIN_SAMPLES",
           "pareto_khat", "rhat_ess", "inference_data", "forest_plot", "khat_plot", "compare_pointwise"]
