"""Evaluation of a trained pair: the numbers papers report, and the diagnostics that say
whether they can be trusted, for any model/guide pair.

Test log-likelihood
    The IWAE_k bound per data point, in nats, for k up to thousands. Data points are
    processed in row blocks and, within a block, the k samples in chunks: at most
    ``ELEMENT_BUDGET`` floats of model output (samples x points x pixels) and
    ``ROW_BUDGET`` log-weights (points x k) are alive at once, whatever N and k are.

Samples that do not depend on the chunking
    The guide's draws are tied to fixed tiles of ``TILE_SAMPLES`` samples x
    ``TILE_POINTS`` data points, each tile drawn from its own seed and replayed into
    whichever chunk needs it. The estimate depends on the seed only, not on chunk sizes
    or memory budgets, so the N x k log-weight matrix can also be recomputed exactly.

Diagnostics from the N x k log-weights, per data point
    Pareto k-hat of the guide as an importance-sampling proposal (PSIS, through
    :mod:`ppvae.evaluation.diagnostics`) and the effective sample size of the normalized weights.
    Also: the ELBO split into reconstruction and KL, active units (Burda et al. 2015),
    and the reconstruction error at the posterior mean.

Everything works from Pyro traces of the pair, so user pairs need no extra methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae import runs
from ppvae.errors import EstimatorError
from ppvae.evaluation import diagnostics
from ppvae.evaluation.memory import retry_on_oom, reuse_freed_memory
from ppvae.evaluation.progress import EvaluationProgress
from ppvae.infer.fast import direct_log_weights, direct_pair, direct_posterior
from ppvae.infer.generic import LogWeights, max_plate_nesting
from ppvae.infer.importance import ELEMENT_BUDGET, log_weights
from ppvae.nn import eval_mode
from ppvae.rng import own_stream
from ppvae.sites import DATA_PLATE, LATENT, PARTICLE_PLATE, decode_mean, is_latent, posterior_draws, posterior_means
from ppvae.sites import rows as _rows
from ppvae.sites import spans as _spans

ROW_BUDGET = 2**21  # log-weights per row block, held in float64 for the diagnostics: 16 MB
TILE_SAMPLES = 32  # the guide's draws are seeded per tile of samples x points
TILE_POINTS = 64
CHECK_POINTS = 8  # data points on which the guide is run twice before an evaluation (see _check_guide_is_a_function)
ROUNDING_ULPS = 256  # log-weights this many float epsilons apart (relative) count as equal for k-hat
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): unit j is active if Cov_x E_q[z_j | x] > 0.01
POINTWISE = "pointwise.npz"  # per test point: ll, elbo, recon, kl, khat, ess, z_mean
LOG_WEIGHTS = "log_weights.npz"  # the N x k matrix as float16 offsets from each row's maximum


def _align(n: int, tile: int, whole: int) -> int:
    """Round ``n`` down to whole tiles, unless it covers everything or is below one tile."""
    return n if n >= whole or n < tile else n // tile * tile


def plan_chunks(n_points: int, k: int, x_dim: int, chunk_size: int = 0, chunk_points: int = 0) -> tuple[int, int]:
    """(data points per row block, samples per chunk) within ``ROW_BUDGET`` and ``ELEMENT_BUDGET``.

    ``chunk_size`` fixes the samples per chunk and ``chunk_points`` the points per block;
    0 chooses them from the budgets, aligned to the sampling tiles.
    """
    x_dim = max(1, x_dim)
    k_chunk = min(k, chunk_size) if chunk_size else 0
    if chunk_points:
        points = min(n_points, chunk_points)
    else:
        per_point = x_dim * (k_chunk or min(k, TILE_SAMPLES))  # room for at least one tile of samples
        points = min(n_points, max(1, ROW_BUDGET // k), max(1, ELEMENT_BUDGET // per_point))
        points = _align(points, TILE_POINTS, n_points)
    if not k_chunk:
        k_chunk = _align(min(k, max(1, ELEMENT_BUDGET // (points * x_dim))), TILE_SAMPLES, k)
    return points, k_chunk


def _tile_seed(seed: int, s: int, p: int) -> int:
    return int(np.random.SeedSequence([seed, s, p]).generate_state(1, dtype=np.uint64)[0])


class TiledProposal:
    """The guide's draws for tiles of ``TILE_SAMPLES`` samples x ``TILE_POINTS`` points.

    Each tile is drawn with the guide on its own points under its own seed; :meth:`trace`
    cuts any (points, samples) chunk out of the tiles as a trace to replay the guide with.
    Local sites (inside the ``data`` plate) come from the chunk's tiles; global sites
    (outside it) from the first point tile of each sample tile, so every data point sees
    the same global draw for a given sample.
    """

    def __init__(self, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, k: int, nesting: int, seed: int,
                 direct: bool = False):
        self.guide, self.x, self.y, self.k, self.nesting, self.seed = guide, x, y, k, nesting, seed
        self.direct = direct  # a library pair: draw from q(z|x) of each point tile, encoded once (ppvae.infer.fast)
        self._posteriors: dict[int, torch.distributions.Distribution] = {}
        self.axes: dict[str, tuple[int, int | None]] = {}  # site -> (sample axis, point axis or None)
        self.point_mass: bool | None = None  # from the first tile: all samples of every local site coincide
        self._cache: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def _particles(self, size: int) -> Callable:
        def guide(*args):
            with pyro.plate(PARTICLE_PLATE, size, dim=-(self.nesting + 1)):
                return self.guide(*args)

        return guide

    def tile(self, s: int, p: int) -> dict[str, torch.Tensor]:
        if (s, p) in self._cache:
            return self._cache[s, p]
        ks = slice(s * TILE_SAMPLES, min(self.k, (s + 1) * TILE_SAMPLES))
        rows = slice(p * TILE_POINTS, min(self.x.shape[0], (p + 1) * TILE_POINTS))
        if self.direct and p not in self._posteriors:
            self._posteriors[p] = direct_posterior(self.guide, self.x[rows], _rows(self.y, rows))
        with own_stream(self.x.device, _tile_seed(self.seed, s, p)):
            if self.direct:  # the same draws as the guide's trace below, without re-running the encoder
                q = self._posteriors[p]
                self.axes[LATENT] = (-(self.nesting + 1) - q.event_dim, -1 - q.event_dim)
                tr = poutine.Trace()
                values = {LATENT: q.rsample((ks.stop - ks.start,))}
            else:
                tr = poutine.trace(self._particles(ks.stop - ks.start)).get_trace(self.x[rows], _rows(self.y, rows))
                values = {}
        for name, site in tr.nodes.items():
            if not is_latent(site):
                continue
            event = site["fn"].event_dim
            data = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
            self.axes[name] = (-(self.nesting + 1) - event, data[0] - event if data else None)
            values[name] = site["value"]
        if self.point_mass is None:
            local = {name: v for name, v in values.items() if self.axes[name][1] is not None}
            self.point_mass = ks.stop - ks.start > 1 and bool(local) and all(
                torch.equal(v, v.narrow(self.axes[name][0], 0, 1).expand_as(v)) for name, v in local.items())
        self._cache[s, p] = values
        return values

    def trace(self, rows: slice, ks: slice) -> poutine.Trace:
        """The draws for samples ``ks`` of points ``rows``, as a trace for ``poutine.replay``."""
        s_range = range(ks.start // TILE_SAMPLES, (ks.stop - 1) // TILE_SAMPLES + 1)
        p_range = range(rows.start // TILE_POINTS, (rows.stop - 1) // TILE_POINTS + 1)
        used = {(s, p) for s in s_range for p in p_range}
        tiles = {key: self.tile(*key) for key in sorted(used)}
        tr = poutine.Trace()
        for name, (sample_axis, point_axis) in self.axes.items():
            if point_axis is None:
                used |= {(s, 0) for s in s_range}
                value = torch.cat([self.tile(s, 0)[name] for s in s_range], sample_axis)
            else:
                value = torch.cat([torch.cat([tiles[s, p][name] for p in p_range], point_axis) for s in s_range],
                                  sample_axis)
                value = value.narrow(point_axis, rows.start - p_range[0] * TILE_POINTS, rows.stop - rows.start)
            value = value.narrow(sample_axis, ks.start - s_range[0] * TILE_SAMPLES, ks.stop - ks.start)
            tr.add_node(name, type="sample", name=name, value=value, is_observed=False, infer={})
        # the next chunk usually starts in the last tiles of this one: keep those, drop the rest
        self._cache = {key: v for key, v in self._cache.items() if key in used}
        self._posteriors = {p: q for p, q in self._posteriors.items() if p in p_range}
        return tr


@dataclass
class RowBlock:
    rows: slice
    log_w: torch.Tensor  # [points, k] log importance weights (local terms; see row_blocks)
    recon: torch.Tensor  # [points] sum over the k samples of log p(x|z)
    latent: torch.Tensor  # [points] sum over the k samples of log p(z) - log q(z|x)
    point_mass: bool  # the guide put all k samples of a point on one value (see TiledProposal)


def _default_seed() -> int:
    """A seed from torch's global generator, so ``pyro.set_rng_seed`` makes evaluation reproducible."""
    return int(torch.randint(0, 2**62, (1,)).item())


@torch.no_grad()
def row_blocks(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
               k: int, chunk_size: int = 0, chunk_points: int = 0, seed: int | None = None,
               on_samples: Callable[[int], None] | None = None, rows: slice | None = None) -> Iterator[RowBlock]:
    """Log-weights of k samples per data point, one row block at a time (see the module docstring).
    ``on_samples`` is told the number of (point, sample) pairs done after each chunk. ``rows``: only
    these points of ``x``, with the draws they get in the whole (the tiles are those of all of ``x``),
    so slices evaluated apart (in parallel) give the numbers of one evaluation.

    On a CUDA out-of-memory error a chunk is retried with half the samples; the draws are
    tied to tiles, not chunks, so the numbers stay the same. The pair is in evaluation mode
    throughout (batch norm on its running statistics, so q(z|x) does not depend on the tile it is
    encoded in), and back in its own mode after.
    """
    with eval_mode(model, guide):
        yield from _row_blocks(model, guide, x, y, k=k, chunk_size=chunk_size, chunk_points=chunk_points, seed=seed,
                               on_samples=on_samples or (lambda samples: None),
                               rows=slice(0, x.shape[0]) if rows is None else rows)


def _row_blocks(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, *,
                k: int, chunk_size: int, chunk_points: int, seed: int | None,
                on_samples: Callable[[int], None], rows: slice) -> Iterator[RowBlock]:
    seed = _default_seed() if seed is None else seed
    n = rows.stop - rows.start
    _check_guide_is_a_function(guide, x[:CHECK_POINTS], _rows(y, slice(0, CHECK_POINTS)))
    nesting = max_plate_nesting(model, guide, x[:1], _rows(y, slice(0, 1)))
    points, k_chunk = plan_chunks(n, k, x[0].numel(), chunk_size, chunk_points)
    reuse_freed_memory()
    direct = direct_pair(model, guide, x, y)
    tiles = TiledProposal(guide, x, y, k, nesting, seed, direct)
    for block in _spans(n, points):
        block = slice(rows.start + block.start, rows.start + block.stop)
        xb, yb = x[block], _rows(y, block)
        q = direct_posterior(guide, xb, yb) if direct else None
        blocks, recon, latent, done = [], 0.0, 0.0, 0
        while done < k:
            def chunk(size: int, start: int = done) -> LogWeights:
                ks = slice(start, min(k, start + size))
                if direct:
                    return direct_log_weights(model, guide, xb, yb, tiles.trace(block, ks).nodes[LATENT]["value"], q)
                replayed = poutine.replay(guide, trace=tiles.trace(block, ks))
                return log_weights(model, replayed, xb, yb, k=ks.stop - ks.start, nesting=nesting)

            lw, k_chunk = retry_on_oom(chunk, k_chunk)
            # global sites (Bayesian decoder weights) are drawn from the guide, not weighted: the test
            # log-likelihood is the predictive log E_q(W) p(x | W). Their log p(W) - log q(W), scaled
            # for training batches, belongs to the training objective, not to each test point.
            blocks.append(lw.log_w)
            recon = recon + lw.obs.sum(0)
            latent = latent + lw.latent.sum(0)
            done += lw.obs.shape[0]
            on_samples(lw.obs.shape[0] * (block.stop - block.start))
        yield RowBlock(block, torch.cat(blocks).T, recon, latent, bool(tiles.point_mass))


def _check_guide_is_a_function(guide: Callable, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Refuse a guide whose q(z|x) changes from run to run (random input corruption, dropout) or with
    the other points of its batch (batch norm in training mode).

    Evaluation draws samples with one run of the guide and scores them with another (replay, or the
    encoder of a row block of another size); if the two runs disagree, samples of one q are weighted by
    another and the IWAE estimate is no longer a bound. Draws are made on a forked generator.
    """
    half = x.shape[0] // 2 if x.shape[0] >= 4 else 0
    with own_stream(x.device):
        first = poutine.trace(guide).get_trace(x, y)
        again = poutine.trace(poutine.replay(guide, trace=first)).get_trace(x, y)
        alone = _first_points_alone(guide, first, x, y, half) if half else {}
    for name, site in first.nodes.items():
        if is_latent(site):
            a, b = site["fn"].log_prob(site["value"]), again.nodes[name]["fn"].log_prob(site["value"])
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-3):
                raise EstimatorError(
                    f"The guide's q({name} | x) differs between two runs on the same inputs (log q moved by up to "
                    f"{(a - b).abs().max().item():.3g}), e.g. from random input corruption or dropout. Evaluation "
                    "scores each draw by running the guide again, so it needs q to be a function of x in evaluation mode "
                    "(which the evaluator sets itself): make the guide's randomness depend on self.training.")
    for name, (a, b) in alone.items():
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-3):
            raise EstimatorError(
                f"The guide's q({name} | x) of a point depends on the other points encoded with it (log q of the "
                f"first {half} of {x.shape[0]} points moved by up to {(a - b).abs().max().item():.3g} when they were "
                "encoded alone), e.g. from batch norm in training mode. Evaluation encodes blocks of any size, so q "
                "must be a function of each point: the evaluator puts nn.Module pairs in eval mode itself, but not "
                "networks that plain model / guide functions close over; call .eval() on those first.")


def _first_points_alone(guide: Callable, trace: poutine.Trace, x: torch.Tensor, y: torch.Tensor | None,
                        m: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """log q of the first ``m`` points' draws in ``trace`` (a run on all of x), and the same draws scored by
    a run of the guide on those m points alone, per local latent site."""
    narrowed, sites = poutine.Trace(), {}  # latent sites only: the plate's subsample site would fix its size
    for name, site in trace.nodes.items():
        if not is_latent(site):
            continue
        frame = next((f for f in site["cond_indep_stack"] if f.name == DATA_PLATE), None)
        if frame is not None:
            lp = site["fn"].log_prob(site["value"])
            if lp.dim() >= -frame.dim and lp.shape[frame.dim] == x.shape[0]:
                site = dict(site, value=site["value"].narrow(frame.dim - site["fn"].event_dim, 0, m))
                sites[name] = lp.narrow(frame.dim, 0, m)
        narrowed.add_node(name, **site)
    alone = poutine.trace(poutine.replay(guide, trace=narrowed)).get_trace(x[:m], _rows(y, slice(0, m)))
    return {name: (lp, alone.nodes[name]["fn"].log_prob(narrowed.nodes[name]["value"])) for name, lp in sites.items()}


@torch.no_grad()
def log_likelihood(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   k: int = 1000, chunk_size: int = 0, chunk_points: int = 0, seed: int | None = None,
                   keep_log_weights: bool = False) -> dict[str, torch.Tensor]:
    """IWAE_k estimate of log p(x) per data point, plus the ELBO split averaged over the k samples.

    Returns ``ll`` [N] (IWAE_k bound), ``elbo`` [N], ``recon`` [N] (E_q log p(x|z)),
    ``kl`` [N] (Monte Carlo E_q[log q - log p(z)]) and, with ``keep_log_weights``,
    ``log_w`` [N, k]. The same ``seed`` gives the same numbers for any chunk sizes.
    """
    out: dict[str, list] = {"ll": [], "elbo": [], "recon": [], "kl": [], "log_w": []}
    for b in row_blocks(model, guide, x, y, k=k, chunk_size=chunk_size, chunk_points=chunk_points, seed=seed):
        out["ll"].append(torch.logsumexp(b.log_w, 1) - math.log(k))
        out["elbo"].append(b.log_w.mean(1))
        out["recon"].append(b.recon / k)
        out["kl"].append(-b.latent / k)
        if keep_log_weights:
            out["log_w"].append(b.log_w)
    return {key: torch.cat(v) for key, v in out.items() if v}


@dataclass
class Evaluation:
    """What :func:`evaluate_detailed` measured: summary metrics, per-point arrays, log-weights."""

    metrics: dict
    pointwise: dict[str, np.ndarray]  # [N] arrays, and z_mean [N, latent]
    log_w_shifted: np.ndarray | None = None  # [N, k] float16: log w minus the row maximum
    log_w_offset: np.ndarray | None = None  # [N] float64 row maxima

    def save(self, run_dir: Path) -> list[Path]:
        """Write ``pointwise.npz`` (and ``log_weights.npz`` when kept) into a run folder."""
        paths = [runs.write_npz(Path(run_dir) / POINTWISE, self.pointwise)]
        stale = Path(run_dir) / LOG_WEIGHTS
        if self.log_w_shifted is not None:
            paths.append(runs.write_npz(stale, {"shifted": self.log_w_shifted, "offset": self.log_w_offset}))
        else:
            stale.unlink(missing_ok=True)  # never leave a matrix from an earlier evaluation beside new metrics
        return paths


def load_pointwise(run_dir: Path) -> dict[str, np.ndarray]:
    """The per-test-point arrays a run's evaluation saved."""
    with np.load(Path(run_dir) / POINTWISE) as f:
        return {key: f[key] for key in f.files}


def load_log_weights(run_dir: Path) -> np.ndarray:
    """The saved N x k log-weight matrix (float32; each row exact to float16 relative to its maximum)."""
    with np.load(Path(run_dir) / LOG_WEIGHTS) as f:
        return (f["shifted"].astype(np.float64) + f["offset"][:, None]).astype(np.float32)


def _share(values: np.ndarray, threshold: float) -> float | None:
    known = values[~np.isnan(values)]
    return float((known > threshold).mean()) if known.size else None


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class Pointwise:
    """The per-point results of the importance sampling for some rows of the test set; rows
    evaluated apart (:func:`pointwise`) join with :meth:`join`."""

    columns: dict[str, np.ndarray]  # ll, elbo, recon, kl, khat, ess: one value per point
    point_mass: bool
    shifted: np.ndarray | None = None  # [points, k] float16 log-weights minus their row maximum, when kept
    offset: np.ndarray | None = None  # [points] the row maxima

    @staticmethod
    def join(parts: list[Pointwise]) -> Pointwise:
        cat = lambda arrays: None if arrays[0] is None else np.concatenate(arrays)  # noqa: E731
        return Pointwise({key: np.concatenate([p.columns[key] for p in parts]) for key in parts[0].columns},
                         any(p.point_mass for p in parts), cat([p.shifted for p in parts]),
                         cat([p.offset for p in parts]))


@torch.no_grad()
def pointwise(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int,
              seed: int, rows: slice | None = None, chunk_size: int = 0, chunk_points: int = 0,
              keep_log_weights: bool = False, max_hours: float = math.inf) -> Pointwise:
    """Per point of ``x[rows]`` (all of ``x`` by default): the IWAE_k bound, ELBO, reconstruction
    term, KL, Pareto k-hat and ESS of the normalized weights, with the draws of the whole ``x``."""
    rows = slice(0, x.shape[0]) if rows is None else rows
    n = rows.stop - rows.start
    columns = {key: np.empty(n) for key in ("ll", "elbo", "recon", "kl", "khat", "ess")}
    shifted = np.empty((n, k), np.float16) if keep_log_weights else None
    offset = np.empty(n) if keep_log_weights else None
    point_mass = False
    with EvaluationProgress(n, k, max_hours) as progress:
        for b in row_blocks(model, guide, x, y, k=k, chunk_size=chunk_size, chunk_points=chunk_points, seed=seed,
                            on_samples=progress, rows=rows):
            here = slice(b.rows.start - rows.start, b.rows.stop - rows.start)
            point_mass = b.point_mass
            lw = b.log_w.double()
            lse = torch.logsumexp(lw, 1)
            part = {"ll": lse - math.log(k), "elbo": lw.mean(1), "recon": b.recon / k, "kl": -b.latent / k,
                    "ess": torch.exp(2 * lse - torch.logsumexp(2 * lw, 1))}
            for key, value in part.items():
                columns[key][here] = value.double().cpu().numpy()
            lw_np = lw.cpu().numpy()
            top = lw_np.max(1)
            rounding = ROUNDING_ULPS * torch.finfo(b.log_w.dtype).eps * (1 + np.abs(top))
            columns["khat"][here] = diagnostics.pareto_khat(lw_np, atol=np.nan_to_num(rounding))
            if keep_log_weights:
                offset[here] = top
                shifted[here] = (lw_np - top[:, None]).astype(np.float16)
    return Pointwise(columns, point_mass, shifted, offset)


@torch.no_grad()
def evaluate_detailed(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      k: int = 1000, chunk_size: int = 0, chunk_points: int = 0, seed: int | None = None,
                      keep_log_weights: bool = False, max_hours: float = math.inf,
                      shards: Callable[[int], Pointwise] | None = None) -> Evaluation:
    """IWAE test log-likelihood with its diagnostics, streamed over row blocks.

    Per data point: the IWAE_k bound, ELBO, reconstruction term, KL, Pareto k-hat, ESS of
    the normalized weights and E_q[z|x]; summaries go to ``metrics`` (nats per example).
    Shows its progress; refuses (ConfigError) when its first chunks say it would take over ``max_hours``.
    ``shards(seed)``, when given, computes the per-point part instead (as :func:`pointwise` with
    that seed, e.g. its row slices in parallel processes): the same numbers.
    """
    start = time.perf_counter()
    seed = _default_seed() if seed is None else seed
    n = x.shape[0]
    part = (shards(seed) if shards else
            pointwise(model, guide, x, y, k=k, seed=seed, chunk_size=chunk_size, chunk_points=chunk_points,
                      keep_log_weights=keep_log_weights, max_hours=max_hours))
    columns = part.columns
    notes = []
    if part.point_mass:
        columns["khat"][:] = np.nan
        columns["ess"][:] = np.nan
        notes.append("The guide is a point mass: test_ll is log p(x, z = encoder(x)), not a bound on log p(x), "
                     "and k-hat and ESS are undefined.")
    elif k < diagnostics.khat_min_samples():
        notes.append(f"k-hat needs at least {diagnostics.khat_min_samples()} importance samples (eval.k = {k}).")
    with eval_mode(model, guide):  # as row_blocks: q(z|x) of each point alone, batch norm untouched
        z_mean, mse, mse_sampled = _reconstruction_errors(model, guide, x, y, seed)
    metrics = _summarize(columns, z_mean, mse) | {"test_recon_mse_sampled": mse_sampled}
    metrics |= {"eval_k": k, "eval_points": n, "eval_seed": seed, "eval_seconds": time.perf_counter() - start}
    if notes:
        metrics["eval_notes"] = notes
    return Evaluation(metrics, columns | {"z_mean": z_mean}, part.shifted, part.offset)


RECON_DRAWS = 10  # z ~ q(z|x) averaged for test_recon_mse_sampled


def _reconstruction_errors(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None, seed: int,
                           batch: int = 1000) -> tuple[np.ndarray, float, float]:
    """E_q[z|x] per point [N, latent], and the mean squared error per pixel of two reconstructions: E[x | z]
    at z = E_q z, and the average of E[x | z] over ``RECON_DRAWS`` draws z ~ q(z|x) (the two ways the AEVB
    replications compared, which found the mean 0.2 % better)."""
    z = posterior_means(guide, x, y, batch)
    sq_err = sq_err_sampled = 0.0
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    with own_stream(x.device, seed):
        for rows in _spans(x.shape[0], batch):
            xb, yb = x[rows], _rows(y, rows)
            sq_err += ((flat(decode_mean(model, z[rows], xb, yb)) - flat(xb)) ** 2).sum().item()
            draws = posterior_draws(guide, xb, yb, RECON_DRAWS)
            average = sum(flat(decode_mean(model, d, xb, yb)) for d in draws) / RECON_DRAWS
            sq_err_sampled += ((average - flat(xb)) ** 2).sum().item()
    n = max(1, x.numel())
    return z.reshape(len(x), -1).float().cpu().numpy(), sq_err / n, sq_err_sampled / n


def _summarize(c: dict[str, np.ndarray], z_mean: np.ndarray, mse: float) -> dict:
    n = len(c["ll"])
    ll = c["ll"]
    activity = z_mean.var(0, ddof=1) if n > 1 else None
    ess = c["ess"][~np.isnan(c["ess"])]
    khat = c["khat"][~np.isnan(c["khat"])]
    return {
        "test_ll": float(ll.mean()),
        "test_ll_se": float(ll.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "test_nll": float(-ll.mean()),
        "test_elbo": float(c["elbo"].mean()),
        "test_recon_loglik": float(c["recon"].mean()),
        "test_kl": float(c["kl"].mean()),
        "test_recon_mse": mse,
        "khat_share_above_0_7": _share(c["khat"], diagnostics.KHAT_GOOD),
        "khat_share_above_1": _share(c["khat"], diagnostics.KHAT_BAD),
        "khat_median": _finite(np.median(khat)) if khat.size else None,
        "khat_max": _finite(khat.max()) if khat.size else None,
        "ess_median": float(np.median(ess)) if ess.size else None,
        "ess_p05": float(np.percentile(ess, 5)) if ess.size else None,
        "active_units": None if activity is None else int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_units": int(z_mean.shape[1]),
    }


@torch.no_grad()
def evaluate(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
             k: int = 1000, chunk_size: int = 0, seed: int | None = None) -> dict:
    """Summary metrics (nats per example) for ``metrics.json``; see :func:`evaluate_detailed`."""
    return evaluate_detailed(model, guide, x, y, k=k, chunk_size=chunk_size, seed=seed).metrics
