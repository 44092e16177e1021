"""``ppvae bench``: ppvae's trainer and evaluator against hand-written PyTorch, side by side.

Researchers should not pay for the model/guide abstraction, so this module times, in one
process, on the same data, network (784-500-50 MLP VAE, Bernoulli likelihood), batch size
and number of threads:

* a hand-written PyTorch reference, written here: an analytic-KL ELBO step and a
  per-datapoint logsumexp IWAE step (standard, STL and DReG gradients), with
  ``torch.optim.Adam`` as one would write it (``reference elbo fused-adam`` also shows the
  fused Adam kernel ppvae's trainer picks, so the optimizer's share of a ratio is visible);
* ppvae's :meth:`~ppvae.infer.trainer.Trainer.train_step` with ``trace``, ``meanfield`` and
  ``iwae`` (k = 5, 50; each gradient estimator);
* Pyro's own ``SVI`` with ``Trace_ELBO`` and ``RenyiELBO(alpha=0)``, what a user would
  otherwise pick;
* ``ppvae trace generic-path``: the trainer with the direct path switched off, i.e. every
  step through Pyro's ``Trace_ELBO`` (see :mod:`ppvae.infer.fast`);
* test-set evaluation: ppvae's IWAE evaluator at k = 100, 1000, 5000 against a batched
  reference with the same chunking (one row block of the plan for 10,000 test images per call);
* with ``compile``, ``torch.compile`` variants of the ELBO and IWAE k=5 steps.

All cases run with the allocator settings of :func:`ppvae.evaluation.memory.reuse_freed_memory`, which
ppvae's evaluator applies to its process anyway.

Timing. Every case is built and warmed up first, then all are timed round-robin (each
round runs every case for about the same wall time, in a rotated order), so background
load hits all of them alike. A case's ``ratio`` is the median over rounds of
``reference time / case time`` within the same round; throughputs are reported as best
(minimum time) and median.

Memory. Peak resident set size (``ru_maxrss``) of a child process forked from a bare
server process that has only imported ppvae: the child builds one case and runs it
alone, so its high-water mark is that case's peak, including the Python/PyTorch runtime
(``baseline_rss_mb``) and the data. On CUDA it is ``torch.cuda.max_memory_allocated``.

Output: a table on stdout, ``bench.json`` (table, scaling sweeps, machine and load),
``bench.md`` (the table in Markdown) and ``bench_scaling.png`` (time against k and batch size).
"""

from __future__ import annotations

import datetime
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from torch import nn

from ppvae import tables
from ppvae.build import build_pair
from ppvae.config import Config, build
from ppvae.data import Dataset, load_dataset
from ppvae.errors import ConfigError
from ppvae.evaluation.loglik import log_likelihood, plan_chunks
from ppvae.evaluation.memory import reuse_freed_memory
from ppvae.infer.estimators import make_estimator
from ppvae.infer.fast import generic_path
from ppvae.infer.trainer import Trainer

MIN_SCALE = 1e-5  # the floor ppvae's diagonal Normal guide adds to softplus(raw scale)
GRADIENTS = ("standard", "stl", "dreg")


@dataclass(frozen=True)
class BenchOptions:
    """What to run; the defaults are the benchmark the README reports."""

    out: str = "bench"
    threads: int = 0  # 0: torch's default
    data: str = "synthetic"  # or "mnist" (statically binarized, read from data_dir)
    data_dir: str = ""
    device: str = "cpu"
    x_dim: int = 784
    hidden: int = 500
    latent: int = 50
    activation: str = "tanh"
    batch: int = 100
    train_ks: tuple[int, ...] = (5, 50)
    eval_ks: tuple[int, ...] = (100, 1000, 5000)
    eval_test_points: int = 10_000  # the test set whose chunk plan the evaluation cases follow
    eval_points: int = 0  # points per evaluation call (0: one row block of that plan)
    rounds: int = 5
    eval_rounds: int = 3
    seconds: float = 0.8  # wall time per case per round (training cases)
    warmup_seconds: float = 0.5
    compile: bool = False  # add torch.compile variants of the ELBO and IWAE k=5 steps (about 25 s to compile each)
    memory: str = "all"  # peak memory of "all" cases, the "key" ones (ELBO steps, largest-k evaluation), or "none"
    sweep_batches: tuple[int, ...] = (20, 50, 100, 200, 500, 1000)
    sweep_train_ks: tuple[int, ...] = (1, 5, 50, 500)
    sweep_eval_ks: tuple[int, ...] = (1, 10, 100, 1000, 5000)
    sweep_rounds: int = 3
    sweep_seconds: float = 0.4
    seed: int = 0
    command: str = ""

    @classmethod
    def quick(cls, **kw) -> "BenchOptions":
        """A smoke run of every case in about a minute; its numbers are rough."""
        return cls(**{"rounds": 2, "eval_rounds": 1, "seconds": 0.15, "warmup_seconds": 0.1, "eval_points": 16,
                      "memory": "key", "sweep_batches": (20, 100, 1000), "sweep_train_ks": (1, 50),
                      "sweep_eval_ks": (1, 100, 5000), "sweep_rounds": 1, "sweep_seconds": 0.1} | kw)


# ----------------------------------------------------------------------------- data and pairs


def synthetic_data(n: int, x_dim: int, seed: int) -> torch.Tensor:
    """Binary images drawn from 20 fixed sparse pixel-probability prototypes (no files needed)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(20, x_dim, generator=g) ** 3
    return torch.bernoulli(prototypes[torch.randint(20, (n,), generator=g)], generator=g)


def load_data(opts: BenchOptions) -> Dataset:
    """Training and test images as a ppvae Dataset on the benchmark's device."""
    if opts.data == "mnist":
        data = load_dataset("mnist", data_dir=opts.data_dir, download=False, binarize="static",
                            max_test=opts.eval_test_points)
        if data.x_dim != opts.x_dim:
            raise ConfigError(f"MNIST images have {data.x_dim} pixels, the benchmark's x_dim is {opts.x_dim}.")
    else:
        n_train = max(20, 10_000 // opts.batch) * opts.batch
        data = Dataset("synthetic", synthetic_data(n_train, opts.x_dim, opts.seed),
                       synthetic_data(opts.eval_test_points, opts.x_dim, opts.seed + 1), (1, opts.x_dim),
                       binarize="static")
    return data.to(opts.device)


def ppvae_config(opts: BenchOptions, estimator: dict, batch: int | None = None) -> Config:
    net = {"name": "mlp", "hidden": [opts.hidden], "activation": opts.activation}
    return build({"data": {"binarize": "static"}, "model": {"latent_dim": opts.latent, "decoder": net},
                  "guide": {"encoder": net}, "estimator": estimator,
                  "train": {"batch_size": batch or opts.batch, "device": opts.device}})


def ppvae_pair(opts: BenchOptions, data: Dataset, tag: str, estimator: dict,
               batch: int | None = None) -> tuple[nn.Module, nn.Module, Config]:
    """The library's pair, with parameter names unique to ``tag`` (Pyro's param store is global)."""
    cfg = ppvae_config(opts, estimator, batch)
    torch.manual_seed(opts.seed)
    model, guide = build_pair(cfg, data)
    model.name, guide.name = f"{tag}.model", f"{tag}.guide"
    return model.to(opts.device), guide.to(opts.device), cfg


# ----------------------------------------------------------------------------- the hand-written reference


class Reference(nn.Module):
    """The same VAE in plain PyTorch: what one would write without Pyro."""

    def __init__(self, x_dim: int, hidden: int, latent: int, activation: str):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), act(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), act(), nn.Linear(hidden, x_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE

    def elbo_loss(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO summed over the batch, with the closed-form Gaussian KL."""
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn_like(loc)
        recon = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
        return kl - recon

    def iwae_loss(self, x: torch.Tensor, k: int, gradient: str = "standard") -> torch.Tensor:
        """-IWAE_k summed over the batch (per-datapoint logsumexp); STL/DReG surrogates as in ppvae."""
        loc, scale = self.encode(x)
        eps = torch.randn((k,) + loc.shape, device=x.device, dtype=x.dtype)
        z = loc + scale * eps
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        if gradient == "standard":  # log p(z) - log q(z|x); the 2 pi terms cancel
            log_w = log_px - 0.5 * (z.pow(2) - eps.pow(2)).sum(-1) + scale.log().sum(-1)
        else:  # q's parameters detached: the score term of q drops out
            loc_d, scale_d = loc.detach(), scale.detach()
            log_w = log_px - 0.5 * (z.pow(2) - ((z - loc_d) / scale_d).pow(2)).sum(-1) + scale_d.log().sum(-1)
        bound = (torch.logsumexp(log_w, 0) - math.log(k)).sum()
        if gradient != "dreg":
            return -bound
        w = torch.softmax(log_w.detach(), 0)
        z.register_hook(lambda g: g * w.unsqueeze(-1))
        return -(w * log_w).sum()

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int, points: int, k_chunk: int) -> torch.Tensor:
        """IWAE_k per data point, in row blocks of ``points`` and chunks of ``k_chunk`` samples."""
        out = []
        for xb in x.split(points):
            loc, scale = self.encode(xb)
            log_scale = scale.log().sum(-1)
            running = torch.full(xb.shape[:1], -math.inf, device=x.device, dtype=x.dtype)
            for start in range(0, k, k_chunk):
                eps = torch.randn((min(k_chunk, k - start),) + loc.shape, device=x.device, dtype=x.dtype)
                z = loc + scale * eps
                logits = self.decoder(z)
                log_w = (-F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
                         - 0.5 * (z.pow(2) - eps.pow(2)).sum(-1) + log_scale)
                running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
            out.append(running - math.log(k))
        return torch.cat(out)


def reference_like(opts: BenchOptions, model: nn.Module, guide: nn.Module) -> Reference:
    """A reference with the ppvae pair's initial weights (same numbers flow through both)."""
    ref = Reference(opts.x_dim, opts.hidden, opts.latent, opts.activation).to(opts.device)
    ref.encoder.load_state_dict(guide.encoder.state_dict())
    ref.decoder.load_state_dict(model.decoder.state_dict())
    return ref


def reference_step(ref: Reference, k: int = 0, gradient: str = "standard", fused: bool = False,
                   compiled: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """One Adam step on the reference's ELBO (``k = 0``) or IWAE_k loss, scaled by 1/batch like ppvae."""
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3, fused=fused or None)
    loss_fn = ref.elbo_loss if k == 0 else lambda x: ref.iwae_loss(x, k, gradient)
    loss_fn = torch.compile(loss_fn) if compiled else loss_fn

    def step(x: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        (loss / x.shape[0]).backward()
        opt.step()
        return loss.detach()

    return step


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One timed configuration: ``run(i)`` does ``units`` of work (steps or test examples)."""

    name: str
    group: str  # "train" or "eval"
    reference: str  # name of the case it is compared with ("" for a reference)
    unit: str
    units: int
    run: Callable[[int], object] = field(repr=False)
    warm: Callable[[], object] | None = field(default=None, repr=False)


def _batches(data: Dataset, batch: int) -> list[torch.Tensor]:
    return [b.contiguous() for b in data.train_x.split(batch) if b.shape[0] == batch]


def train_case(opts: BenchOptions, data: Dataset, name: str, batch: int | None = None) -> Case:
    """A training case by name: ``reference elbo``, ``reference iwae k=5 stl``, ``ppvae trace``,
    ``ppvae iwae k=50 dreg``, ``pyro svi trace_elbo``, ``pyro svi renyi k=5``; the variants
    ``reference elbo fused-adam`` (hand-written with PyTorch's fused Adam, as ppvae's trainer
    uses) and ``ppvae trace generic-path`` (ppvae without its direct path) show where time goes."""
    batch = batch or opts.batch
    xs = _batches(data, batch)
    words = name.split()
    k = next((int(w[2:]) for w in words if w.startswith("k=")), 0)
    gradient = next((w for w in words if w in GRADIENTS), "standard")
    tag = name.replace(" ", "_").replace("=", "")
    est = ({"name": "iwae", "k": k, "gradient": gradient} if "iwae" in words
           else {"name": words[1] if words[0] == "ppvae" else "trace"})
    model, guide, cfg = ppvae_pair(opts, data, tag, est, batch)
    ref_name = f"reference iwae k={k} {gradient}" if k else "reference elbo"
    if words[0] == "reference":
        step = reference_step(reference_like(opts, model, guide), k, gradient, fused="fused-adam" in words,
                              compiled="compiled" in words)
        ref_name = ref_name if {"fused-adam", "compiled"} & set(words) else ""
    elif words[0] == "ppvae":
        trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train, opts.device)
        trainer.setup(xs[0])
        step = trainer.train_step
        if "generic-path" in words:
            step = _generic(trainer.train_step)
        if "compiled" in words:
            trainer.estimator = CompiledObjective(trainer.estimator, model, guide)
    else:  # Pyro's SVI as a user would set it up: vectorized particles, Adam
        elbo = (RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1) if k
                else Trace_ELBO())
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo)
        step = svi.step
        ref_name = f"reference iwae k={k} standard" if k else "reference elbo"
    return Case(name, "train", ref_name, "steps/s", 1, lambda i: step(xs[i % len(xs)]))


class CompiledObjective:
    """Stands in for a trainer's estimator: the same objective through ``torch.compile``."""

    def __init__(self, estimator: object, model: nn.Module, guide: nn.Module):
        self.objective = torch.compile(lambda x: estimator(model, guide, x).surrogate)

    def backward(self, model: nn.Module, guide: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 scale: float) -> torch.Tensor:
        surrogate = self.objective(x)
        (scale * surrogate).backward()
        return surrogate.detach()


def _generic(step: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def generic_step(x: torch.Tensor) -> torch.Tensor:
        with generic_path():
            return step(x)

    return generic_step


def eval_plan(opts: BenchOptions, k: int) -> tuple[int, int]:
    """(points per row block, samples per chunk) the evaluator uses for the full test set."""
    return plan_chunks(opts.eval_test_points, k, opts.x_dim)


def eval_case(opts: BenchOptions, data: Dataset, name: str) -> Case:
    """``ppvae eval k=K`` (ppvae's evaluator) or ``reference eval k=K``, one row block per call."""
    words = name.split()
    k = int(words[2][2:])
    points, k_chunk = eval_plan(opts, k)
    points = min(opts.eval_points or points, data.test_x.shape[0])
    x = data.test_x[:points]
    model, guide, _ = ppvae_pair(opts, data, name.replace(" ", "_").replace("=", ""), {"name": "trace"})
    if words[0] == "reference":
        ref = reference_like(opts, model, guide)
        run = lambda i: ref.log_likelihood(x, k, points, k_chunk)  # noqa: E731
        warm = lambda: ref.log_likelihood(x[:2], min(k, k_chunk), 2, k_chunk)  # noqa: E731
        ref_name = ""
    else:
        run = lambda i: log_likelihood(model, guide, x, k=k, seed=i)  # noqa: E731
        warm = lambda: log_likelihood(model, guide, x[:2], k=min(k, k_chunk), seed=0)  # noqa: E731
        ref_name = f"reference eval k={k}"
    return Case(name, "eval", ref_name, "examples/s", points, run, warm)


def case_names(opts: BenchOptions) -> list[str]:
    """Every case of the table, references first within each group."""
    names = ["reference elbo", "ppvae trace", "ppvae meanfield", "pyro svi trace_elbo", "reference elbo fused-adam",
             "ppvae trace generic-path"]
    for k in opts.train_ks:
        names += [f"reference iwae k={k} {g}" for g in GRADIENTS] + [f"ppvae iwae k={k} {g}" for g in GRADIENTS]
    if 5 in opts.train_ks:
        names.append("pyro svi renyi k=5")
    if opts.compile:
        names += ["reference elbo compiled", "ppvae trace compiled", "reference iwae k=5 standard compiled",
                  "ppvae iwae k=5 standard compiled"]
    for k in opts.eval_ks:
        names += [f"reference eval k={k}", f"ppvae eval k={k}"]
    return names


def make_case(opts: BenchOptions, data: Dataset, name: str) -> Case:
    return eval_case(opts, data, name) if " eval " in name else train_case(opts, data, name)


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(case: Case, calls: int, start: int, device: str) -> float:
    """Seconds per unit of work over ``calls`` calls."""
    _sync(device)
    t = time.perf_counter()
    for i in range(start, start + calls):
        case.run(i)
    _sync(device)
    return (time.perf_counter() - t) / (calls * case.units)


def warm_up(case: Case, seconds: float, device: str) -> float:
    """Run until ``seconds`` have passed (at least twice); returns the last call's seconds per call."""
    if case.warm is not None:
        case.warm()
        return math.inf
    deadline, last, i = time.perf_counter() + seconds, math.inf, 0
    while i < 2 or time.perf_counter() < deadline:
        last = _time(case, 1, i, device) * case.units
        i += 1
    return last


def time_round_robin(cases: list[Case], rounds: int, seconds: float, warmup: float,
                     device: str) -> dict[str, list[float]]:
    """Seconds per unit for each case and round; cases interleaved, order rotated every round."""
    calls = {}
    for case in cases:
        per_call = warm_up(case, warmup, device)
        calls[case.name] = 1 if not math.isfinite(per_call) else max(1, round(seconds / max(per_call, 1e-6)))
    times: dict[str, list[float]] = {case.name: [] for case in cases}
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            times[case.name].append(_time(case, calls[case.name], 1000 * r, device))
    return times


# ----------------------------------------------------------------------------- memory


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _probe(job: tuple[BenchOptions, str]) -> tuple[float, float]:
    """In a fresh child: (baseline peak RSS, peak RSS after building and running one case), MB."""
    opts, name = job
    if opts.threads:
        torch.set_num_threads(opts.threads)
    reuse_freed_memory()
    baseline = _rss_mb()
    case = make_case(opts, load_data(opts), name)
    warm_up(case, 0, opts.device)
    case.run(0)
    if case.group == "train":
        for i in range(1, 5):
            case.run(i)
    return baseline, _rss_mb()


def peak_memory(opts: BenchOptions, names: list[str]) -> dict[str, tuple[float, float]]:
    """Peak memory per case, each in its own child process (see the module docstring)."""
    if opts.device.startswith("cuda"):
        data, out = load_data(opts), {}
        for name in names:
            case = make_case(opts, data, name)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.max_memory_allocated() / 2**20
            warm_up(case, 0, opts.device)
            case.run(0)
            out[name] = (base, torch.cuda.max_memory_allocated() / 2**20)
            del case
        return out
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ppvae.experiments.bench"])
    # The server process puts its working folder first on its path: started in a source checkout, the
    # source folder ppvae/ would shadow the installed package, which alone holds ppvae.experiments.
    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        pool = ctx.Pool(1, maxtasksperchild=1)
    finally:
        os.chdir(here)
    with pool:
        return dict(zip(names, pool.map(_probe, [(opts, n) for n in names], chunksize=1)))


# ----------------------------------------------------------------------------- sweeps and figure


def sweeps(opts: BenchOptions, data: Dataset) -> dict[str, dict]:
    """Time against batch size (ELBO and IWAE k=5 steps) and against k (IWAE steps, evaluation)."""

    def sweep(xs: tuple[int, ...], series: tuple[str, ...], make: Callable[[str, int], Case], train: bool) -> dict:
        cases = [replace(make(name, x), name=f"{name} @ {x}") for x in xs for name in series]
        rounds, seconds, warmup = (opts.sweep_rounds, opts.sweep_seconds, opts.warmup_seconds) if train else (1, 0, 0)
        return _series(time_round_robin(cases, rounds, seconds, warmup, opts.device), xs)

    batch_names = ("reference elbo", "ppvae trace", "reference iwae k=5 standard", "ppvae iwae k=5 standard")
    return {
        "batch": sweep(opts.sweep_batches, batch_names, lambda name, b: train_case(opts, data, name, b), True),
        "train_k": sweep(opts.sweep_train_ks, ("reference iwae", "ppvae iwae"),
                         lambda name, k: train_case(opts, data, f"{name} k={k} standard"), True),
        "eval_k": sweep(opts.sweep_eval_ks, ("reference eval", "ppvae eval"),
                        lambda name, k: eval_case(opts, data, f"{name} k={k}"), False),
    }


def _series(times: dict[str, list[float]], xs: tuple[int, ...]) -> dict:
    """{'x': [...], series name: [median seconds per unit at each x]}."""
    names = sorted({key.rsplit(" @ ", 1)[0] for key in times})
    return {"x": list(xs)} | {n: [statistics.median(times[f"{n} @ {x}"]) for x in xs] for n in names}


def figure(sweep: dict[str, dict], path: Path, title: str) -> Path:
    """Three panels: step time vs batch size, step time vs k, evaluation time per example vs k."""
    from ppvae.plots import plt, save

    panels = [("batch", "batch size", "seconds per training step"),
              ("train_k", "k (IWAE samples)", f"seconds per training step (batch {sweep['batch_size']})"),
              ("eval_k", "k (importance samples)", "seconds per test example")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, xlabel, ylabel) in zip(axes, panels):
        series = sweep[key]
        kinds = sorted({name.split(" ", 1)[1] for name in series if name != "x"})
        for name, ys in sorted(series.items()):
            if name != "x":
                who, kind = name.split(" ", 1)
                ax.plot(series["x"], ys, marker="o", color=f"C{kinds.index(kind)}",
                        linestyle="--" if who == "reference" else "-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}; solid: ppvae, dashed: hand-written reference")
    fig.tight_layout()
    return save(fig, path, tight=False)


# ----------------------------------------------------------------------------- the whole benchmark


def summarize(cases: list[Case], times: dict[str, list[float]],
              memory: dict[str, tuple[float, float]]) -> list[dict]:
    """One row per case: throughputs, paired ratio to its reference, peak memory."""
    rows = []
    for case in cases:
        t = times[case.name]
        row = {"name": case.name, "group": case.group, "unit": case.unit, "reference": case.reference,
               "best": 1 / min(t), "median": 1 / statistics.median(t), "seconds_per_unit": t}
        if case.reference:
            paired = [r / c for r, c in zip(times[case.reference], t)]
            row |= {"ratio": statistics.median(paired), "ratios": paired}
        if case.name in memory:
            row |= {"baseline_rss_mb": memory[case.name][0], "peak_rss_mb": memory[case.name][1]}
        rows.append(row)
    return rows


def table(rows: list[dict], markdown: bool = False) -> str:
    """The result table as aligned text or Markdown."""
    head = ["case", "unit", "best", "median", "x reference", "peak RSS MB"]
    body = [[r["name"], r["unit"], f"{r['best']:.1f}", f"{r['median']:.1f}",
             f"{r['ratio']:.2f}" if "ratio" in r else "1 (ref)",
             f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"] for r in rows]
    if markdown:
        return tables.markdown(head, body).rstrip("\n")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def machine(opts: BenchOptions) -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "pyro": pyro.__version__, "device": opts.device,
            "gpu": torch.cuda.get_device_name() if opts.device.startswith("cuda") else None}


def run(opts: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark, write ``bench.json``, ``bench.md`` and ``bench_scaling.png`` under ``opts.out``."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    reuse_freed_memory()  # as ppvae's evaluator does: the same allocator settings for every case
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    start, load_before = time.perf_counter(), os.getloadavg()
    pyro.set_rng_seed(opts.seed)
    data = load_data(opts)
    names = case_names(opts)
    log(f"ppvae bench: {len(names)} cases, torch threads: {torch.get_num_threads()}, data {opts.data}, "
        f"load average {load_before[0]:.2f}")
    probed = {"all": names, "none": [],
              "key": ["reference elbo", "ppvae trace", f"reference eval k={max(opts.eval_ks)}",
                      f"ppvae eval k={max(opts.eval_ks)}"]}[opts.memory]
    log(f"peak memory: {len(probed)} cases, one process each ...")
    memory = peak_memory(opts, probed) if probed else {}
    cases = [make_case(opts, data, name) for name in names]
    train_cases = [c for c in cases if c.group == "train"]
    log(f"timing: {len(train_cases)} training cases x {opts.rounds} rounds, "
        f"{len(cases) - len(train_cases)} evaluation cases x {opts.eval_rounds} rounds ...")
    times = time_round_robin(train_cases, opts.rounds, opts.seconds, opts.warmup_seconds, opts.device)
    times |= time_round_robin([c for c in cases if c.group == "eval"], opts.eval_rounds, 0, 0, opts.device)
    rows = summarize(cases, times, memory)
    log(table(rows))
    del cases, train_cases
    log("scaling sweeps (time against batch size and k) ...")
    sweep = sweeps(opts, data) | {"batch_size": opts.batch}
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": opts.command,
        "options": asdict(opts),
        "machine": machine(opts),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "seconds": time.perf_counter() - start,
        "memory_measures": ("cuda max_memory_allocated" if opts.device.startswith("cuda") else
                            "ru_maxrss of a child forked from a bare server, running the case alone"),
        "rows": rows,
        "sweeps": sweep,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(table(rows, markdown=True) + "\n")
    figure(sweep, out / "bench_scaling.png",
           f"ppvae vs hand-written PyTorch, torch threads: {torch.get_num_threads()}, {opts.device}")
    log(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench_scaling.png'} "
        f"({result['seconds']:.0f} s, load average {result['load_average']['after'][0]:.2f})")
    return result


def command_line() -> str:
    return " ".join(["ppvae", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("ppvae") else " ".join(sys.argv)


__all__ = ["BenchOptions", "Reference", "run", "case_names", "make_case", "synthetic_data", "table"]
