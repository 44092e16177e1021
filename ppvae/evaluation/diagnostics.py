"""ArviZ behind one small module: every ArviZ call in ppvae goes through here.

ArviZ 0.23.x (what pip resolves on Python 3.11) has ``psislw``, ``from_dict``, ``rhat``, ``ess``,
``loo``, ``compare``, ``plot_forest`` and ``plot_khat`` at the top level. ArviZ 1.x (what pip
resolves on Python >= 3.12) is a namespace over arviz-base (``from_dict``, giving an xarray
``DataTree``), arviz-stats (PSIS, ``loo``, ``compare``, ``rhat``, ``ess``, ``hdi``) and arviz-plots
(``plot_forest``, ``plot_khat``, drawing through a ``PlotCollection``). Every function here works
with both and gives the same numbers: R-hat and ESS are one call for both; the others branch on
:func:`arviz_major`, and where 1.x changed a default, its branch asks for the 0.23 one:

- PSIS (k-hat, and the smoothed weights of ``loo``): 0.23 fits the generalized Pareto tail to the
  ceil(min(S/5, 3 sqrt(S))) largest of S weights, arviz-stats 1.3 to floor(3 sqrt(S)) of them
  above S = 225 (floor(S/5) below, and an error under 25), so the 1.x branch gives arviz-stats'
  tail fit the 0.23 tail, and ``loo`` those weights. One difference stays: arviz-stats declines a
  tail of 5 weights (its first quartile is its minimum), so with 21 to 25 samples k-hat is NaN
  (and ``loo`` leaves those weights unsmoothed) where 0.23 gives a (very noisy) number;
- ``loo``'s se: 1.x takes the sample variance of the pointwise elpd (ddof=1), 0.23 the population
  one, so it is scaled back by sqrt((n-1)/n); ``compare``'s elpd_diff: 1.x model minus best (<= 0),
  0.23 best minus model (>= 0); its table keeps 0.23's columns (elpd_loo, p_loo, ..., scale);
- the forest plot: arviz-plots pads configurations with fewer seeds with NaN, so the intervals, the
  median, ESS and R-hat are computed per configuration (ArviZ 0.23's forest statistics: HDI, the
  central quartiles, rank-free ESS and R-hat) and handed to ``plot_forest``;
- the k-hat plot: ``plot_khat`` draws each run into its panel of one figure.

Figures agree in content (the same intervals, points, thresholds and percentages), not pixel for
pixel. ArviZ is imported on first use: it takes seconds to import, and most commands never need it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import types
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
    from arviz import InferenceData  # ArviZ 1.x: an xarray DataTree

KHAT_GOOD = 0.7  # above: the importance-sampling estimate is unreliable (Vehtari et al. 2024)
KHAT_BAD = 1.0  # above: the weights have no finite mean; the estimate is meaningless
# PSIS fits a generalized Pareto tail to the largest ceil(min(k/5, 3 sqrt(k))) weights and
# needs at least 5 of them: k >= 21 importance samples (arviz-stats' fit wants 6: k >= 26).
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


def khat_min_samples() -> int:
    """The fewest importance samples that give a k-hat: 21 with ArviZ 0.23, 26 with arviz-stats' tail fit (it
    declines a tail of 5 weights)."""
    return KHAT_MIN_SAMPLES if arviz_major() < 1 else 26


def _array_stats():
    """arviz-stats' functions on NumPy arrays (ArviZ >= 1.0)."""
    from arviz_stats.base import array_stats

    return array_stats


def _psis_tail_length(samples: int) -> int:
    """ArviZ 0.23's PSIS tail for independent draws (r_eff = 1): the ceil(min(S/5, 3 sqrt(S))) largest."""
    return math.ceil(min(samples / 5, 3 * math.sqrt(samples)))


def _psis_khat(log_w: np.ndarray) -> np.ndarray:
    if arviz_major() < 1:
        _, khat = arviz().psislw(log_w, 1.0)
        return np.asarray(khat, dtype=np.float64)
    return _psislw_arviz_stats(log_w)[1]


def _psislw_arviz_stats(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ 0.23's ``psislw(log_w, 1.0)`` of each row of ``log_w`` [N, S] with arviz-stats' tail fit: the
    Pareto-smoothed normalized log weights and k-hat."""
    from scipy.special import logsumexp

    array_stats = _array_stats()
    if not hasattr(array_stats, "_ps_tail"):
        raise ArviZVersionError(f"arviz-stats {_array_stats_version()} has no generalized Pareto tail fit "
                                "(_ps_tail) for ppvae's k-hat: pip install 'arviz>=1.3,<1.4' (or 'arviz>=0.23,<1').")
    # arviz-stats' public psislw picks its own (shorter) tail and fails below 25 draws; ArviZ 0.23's is
    # the weights above the (T+1)-th largest and above tiny * the largest (fewer than T where they tie)
    samples = log_w.shape[-1]
    tail = _psis_tail_length(samples)
    ordered = np.sort(log_w, axis=-1)
    below = ordered[:, -tail - 1] if samples > tail else np.full(len(log_w), -np.inf)
    cutoff = np.maximum(below, ordered[:, -1] + np.log(np.finfo(float).tiny))
    tails = (log_w > cutoff[:, None]).sum(axis=-1)
    smoothed = log_w - logsumexp(log_w, axis=-1, keepdims=True)  # 0.23: a row without a tail fit is only normalized
    khat = np.full(log_w.shape[0], np.inf)  # 0.23: fewer than 5 weights in the tail give inf
    for row in np.flatnonzero(tails >= 5):
        try:
            smoothed[row], khat[row] = array_stats._ps_tail(log_w[row], samples, int(tails[row]), smooth_draws=True,
                                                            tail="right", log_weights=True)
        except ValueError:  # arviz-stats refuses a tail of equal weights
            khat[row] = np.nan
    return smoothed, khat


def _array_stats_version() -> str:
    import arviz_stats

    return getattr(arviz_stats, "__version__", "?")


def pareto_khat(log_w: np.ndarray, atol: float | np.ndarray = 0.0) -> np.ndarray:
    """Pareto k-hat of each row of ``log_w`` [N, k] (log importance weights, samples last).

    k-hat < 0.5: the weights have finite variance; < 0.7: importance sampling is reliable;
    > 0.7: the proposal (the guide) misses mass of the posterior and the estimate of
    log p(x) is unreliable (Vehtari et al. 2024). Independent samples, so r_eff = 1.
    Special rows: fewer than ``KHAT_MIN_SAMPLES`` samples (ArviZ 1.x: fewer than 26), or a
    non-finite maximum, give NaN; weights equal to within ``atol`` (per row, in nats: a perfect
    proposal up to rounding) give -inf, a bounded tail, rather than a fit to rounding noise.
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
    with _quiet():  # both ArviZ lines read a 2-d array as [chains, draws]
        rhat = arviz().rhat(draws) if draws.shape[0] > 1 else np.nan
        ess = arviz().ess(draws, method="bulk")
    return float(rhat), float(ess)


def inference_data(posterior: dict[str, np.ndarray], attrs: dict | None = None) -> InferenceData:
    """An ``InferenceData`` (ArviZ 1.x: a ``DataTree``) whose posterior holds ``[chains, draws]`` arrays
    (chains = seeds), with ``attrs`` on the whole (``.attrs``)."""
    if arviz_major() >= 1:
        return arviz().from_dict({"posterior": posterior}, attrs={"/": attrs or {}})
    return arviz().from_dict(posterior=posterior, attrs=attrs or {})


def forest_plot(datasets: Sequence[InferenceData], labels: Sequence[str], var_name: str, path: Path, *,
                title: str = "", hdi_prob: float = 0.95) -> Path:
    """One row per configuration: the pooled draws of all its chains (the HDI, the central quartiles
    and the median), with ESS and R-hat columns (rank-free, as ArviZ 0.23's forest plot has them)."""
    figsize = (9, 1.2 + 0.5 * len(labels))
    if arviz_major() >= 1:
        fig = _forest_figure(datasets, labels, var_name, hdi_prob, figsize)
    else:
        with _quiet():
            axes = arviz().plot_forest(list(datasets), model_names=list(labels), var_names=[var_name],
                                       combined=True, hdi_prob=hdi_prob, r_hat=True, ess=True, figsize=figsize)
        fig = np.ravel(axes)[0].figure
    if title:
        fig.suptitle(title, y=1.0 + 0.35 / fig.get_figheight())
    return plots.save(fig, path)


def _forest_figure(datasets: Sequence, labels: Sequence[str], var_name: str, hdi_prob: float,
                   figsize: tuple[float, float]) -> matplotlib.figure.Figure:
    """ArviZ 1.x: arviz-plots' ``plot_forest`` with ArviZ 0.23's statistics, and its ESS and R-hat columns."""
    import xarray as xr
    from arviz_plots import plot_forest, visuals

    az, array_stats = arviz(), _array_stats()
    draws = [np.asarray(d["posterior"][var_name], dtype=np.float64) for d in datasets]  # [chains, draws]
    models = {"model": list(labels)}

    def per_model(values: list, bounds: bool = False) -> xr.Dataset:
        dims, coords = ("model", "ci_bound") if bounds else ("model",), models | (
            {"ci_bound": ["lower", "upper"]} if bounds else {})
        return xr.Dataset({var_name: xr.DataArray(np.asarray(values, dtype=np.float64), dims=dims, coords=coords)})

    with _quiet():
        stats = {"twig": per_model([array_stats.hdi(d.ravel(), hdi_prob, axis=-1) for d in draws], bounds=True),
                 "trunk": per_model([array_stats.eti(d.ravel(), 0.5, axis=-1) for d in draws], bounds=True),
                 "point_estimate": per_model([np.median(d) for d in draws])}
        columns = {"ess": per_model([az.ess(d, method="identity") for d in draws]),
                   "r_hat": per_model([az.rhat(d, method="identity") if d.shape[0] > 1 else np.nan for d in draws])}
        # the layout only: configurations with fewer seeds are padded with NaN
        layout = xr.concat([xr.Dataset({var_name: (("chain", "draw"), d)},
                                       coords={"chain": np.arange(d.shape[0]), "draw": np.arange(d.shape[1])})
                            for d in draws], dim="model", join="outer").assign_coords(models)
        layout = layout.expand_dims(column=4).assign_coords(column=["labels", "forest", *columns])
        pc = plot_forest(layout, combined=True, point_estimate="median", ci_kind="hdi", ci_probs=(0.5, hdi_prob),
                         stats=stats, backend="matplotlib", visuals={"ticklabels": False},
                         figure_kwargs={"figsize": figsize, "figsize_units": "inches", "width_ratios": [1, 3, 1, 1]})
        for name, values in columns.items():
            pc.map(visuals.scatter_x, name, data=values, coords={"column": name}, ignore_aes={"alpha"})
        fig = pc.viz["figure"].item()
        pc.add_legend("model", title="", loc="upper left", bbox_to_anchor=(1.0, 1.0), bbox_transform=fig.transFigure)
    pc.get_target(None, {"column": "labels"}).set_xticks([])
    target = pc.get_target(None, {"column": "forest"})
    target.set_title(f"{hdi_prob:.1%} HDI")
    target = pc.get_target(None, {"column": "ess"})
    target.set_xlim(left=0)
    target.set_title("ess")
    target = pc.get_target(None, {"column": "r_hat"})
    target.set_xlim(0.9, 2.1)
    target.set_xticks([1, 2])
    target.set_title("r_hat")
    return fig


def khat_plot(khats: Sequence[np.ndarray], titles: Sequence[str], path: Path) -> Path:
    """Per-datapoint Pareto k-hat, one panel per run, with the 0.7 and 1.0 thresholds."""
    n = len(khats)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, khat, title in zip(axes.flat, khats, titles):
        khat = np.asarray(khat, dtype=np.float64)
        finite = np.isfinite(khat)
        if finite.any():
            with _quiet():  # ArviZ would like ELPDData; an array is right for independent draws
                _khat_panel(khat[finite], ax)
        hidden = int((~finite).sum())
        ax.set_title(title + (f"\n({hidden} points without a finite k-hat)" if hidden else ""), fontsize=9)
        ax.set_ylabel("Pareto k-hat")
        ax.set_xlabel("test point")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return plots.save(fig, path)


def _khat_panel(khat: np.ndarray, ax: matplotlib.axes.Axes) -> None:
    """ArviZ's k-hat plot of ``khat`` [N] on ``ax``: the points, the 0, 0.7 and 1 lines and the share in each bin."""
    if arviz_major() < 1:
        arviz().plot_khat(khat, ax=ax, show_hlines=True, show_bins=True)
        return
    import xarray as xr
    from arviz_plots import PlotCollection, plot_khat

    pareto_k = xr.DataArray(khat, dims=["test_point"], coords={"test_point": np.arange(len(khat))})
    # plot_khat reads .pareto_k (and the threshold .good_k) of an ELPDData; its figure is a
    # PlotCollection, here one whose only plot is ``ax``
    panel = PlotCollection(pareto_k.to_dataset(name="pareto_k"), xr.DataTree(xr.Dataset(
        {"figure": np.array(ax.figure, dtype=object), "plot": np.array(ax, dtype=object),
         "row_index": np.array(0), "col_index": np.array(0)})), backend="matplotlib")
    # ArviZ 0.23 bins the points at 0.7 and 1 and draws a line at 0 too, not a bin edge
    plot_khat(types.SimpleNamespace(pareto_k=pareto_k, good_k=KHAT_GOOD), plot_collection=panel,
              hline_values=[KHAT_GOOD, KHAT_BAD], legend=False,
              visuals={"hlines": {"color": "C1"}, "bin_text": {}, "khat": {"marker": "+"}})
    ax.axhline(0.0, color="C1", alpha=0.7, linestyle=":")
    ax.set_xlim(left=-max(0.5, 0.04 * len(khat)))  # plot_khat starts the axis at the first point


def _loo_arviz_stats(log_lik: np.ndarray):
    """arviz-stats' ``loo`` of ``log_lik`` [S, N] with ArviZ 0.23's PSIS weights (any S; arviz-stats' own
    PSIS needs S >= 25 and takes a shorter tail above S = 225)."""
    import arviz_stats
    import xarray as xr

    data = arviz().from_dict({"log_likelihood": {"x": log_lik[None]}})  # dims chain, draw, x_dim_0
    log_weights, khat = _psislw_arviz_stats(-log_lik.T)  # per point, over the draws
    like = data["log_likelihood"]["x"]
    return arviz_stats.loo(data, pointwise=True, reff=1.0, var_name="x",
                           log_weights=xr.DataArray(log_weights.T[None], dims=like.dims, coords=like.coords),
                           pareto_k=xr.DataArray(khat, dims=like.dims[2:], coords={d: like.coords[d]
                                                                                    for d in like.dims[2:]}))


def compare_pointwise(log_lik: dict[str, np.ndarray]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """ArviZ ``loo`` of each model's pointwise log-likelihood ``[S, N]`` (S independent draws, e.g. of
    decoder weights from a variational posterior: one chain, relative efficiency 1), and ArviZ's
    ``compare`` table of them (stacking weights). Returns the table as rows and each model's per-point
    Pareto k-hat. The rows have ArviZ 0.23's columns and conventions with either ArviZ: rank,
    elpd_loo, p_loo, elpd_diff (best minus this, >= 0), weight, se, dse, warning, scale.
    """
    az = arviz()
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ warns about high k-hat; the k-hats are returned
        if arviz_major() >= 1:
            import arviz_stats

            loos = {name: _loo_arviz_stats(np.asarray(ll, dtype=np.float64)) for name, ll in log_lik.items()}
            table = arviz_stats.compare(loos, round_to="none")
        else:
            loos = {name: az.loo(az.from_dict(log_likelihood={"x": np.asarray(ll)[None]}), pointwise=True, reff=1.0)
                    for name, ll in log_lik.items()}
            table = az.compare(loos, ic="loo")

    def plain(v):
        return bool(v) if isinstance(v, (bool, np.bool_)) else float(v) if isinstance(v, (int, float, np.number)) else v

    if arviz_major() >= 1:
        rows = []
        for name, row in table.iterrows():
            loo = loos[name]
            rows.append({"model": name, "rank": float(row["rank"]), "elpd_loo": float(row["elpd"]),
                         "p_loo": float(row["p"]), "elpd_diff": 0.0 - float(row["elpd_diff"]),
                         "weight": float(row["weight"]),
                         "se": float(row["se"]) * math.sqrt((loo.n_data_points - 1) / loo.n_data_points),
                         "dse": float(row["dse"]), "warning": bool(loo.warning), "scale": loo.scale})
    else:
        rows = [{"model": name} | {key: plain(v) for key, v in row.items()} for name, row in table.iterrows()]
    return rows, {name: np.asarray(loo.pareto_k) for name, loo in loos.items()}


__all__ = ["ArviZVersionError", "KHAT_GOOD", "KHAT_BAD", "arviz", "arviz_major", "KHAT_MIN_SAMPLES",
           "khat_min_samples", "pareto_khat", "rhat_ess", "inference_data", "forest_plot", "khat_plot",
           "compare_pointwise"]
