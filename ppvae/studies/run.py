"""One run, end to end: config -> data -> pair -> training -> evaluation and analyses -> run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from ppvae import runs, tables
from ppvae.analyses import RunContext
from ppvae.build import build_pair, pair_params
from ppvae.config import Config, build, from_run_folder, to_dict
from ppvae.data import Dataset, load_dataset
from ppvae.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    Interrupted,
    PairError,
    PPVAEError,
    TrainingError,
    one_line,
    reported_as,
)
from ppvae.evaluation.figures import run_figures
from ppvae.evaluation.glossary import describe
from ppvae.evaluation.loglik import Pointwise, evaluate_detailed
from ppvae.evaluation.sampling import collapse_diagnostics
from ppvae.infer import distributed
from ppvae.infer.estimators import make_estimator
from ppvae.infer.trainer import Trainer, interrupt_on_signals, resolve_device, seed_everything, stop_on_signals
from ppvae.nn import eval_mode, kept_buffers

log = logging.getLogger(__name__)

RESUMABLE = ("train.epochs", "train.lr", "train.device", "eval.", "log.")  # what ``--resume`` overrides may change


def absolute_paths(cfg: Config) -> Config:
    """Store a user pair's and plugins' file paths absolutely so the run folder works from anywhere."""
    target, sep, func = cfg.model.pair.rpartition(":")
    if sep and target.endswith(".py"):
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pair=f"{Path(target).resolve()}:{func}"))
    plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in cfg.plugins)
    return dataclasses.replace(cfg, plugins=plugins) if plugins != cfg.plugins else cfg


def prepare(cfg: Config) -> tuple[Dataset, Trainer]:
    """Load data, build the pair and a set-up trainer (parameters and optimizer exist).

    Whatever is wrong with the input fails here, before any step, as one ppvae error.
    """
    if cfg.model.pair:
        pair_params(cfg)  # the factory's own parameters, checked before the data are loaded
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    group = distributed.from_environment(device)  # started by torchrun: one rank of a data-parallel run
    if group and device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
    data = load_dataset(cfg.data).to(device)
    if data.train_x.shape[0] == 0:
        raise DataError(f"The training set of {cfg.data.name!r} is empty; lower data.test_fraction "
                        "or raise data.max_train.")
    try:
        with reported_as("Building the model/guide pair failed"):
            model, guide = build_pair(cfg, data)
    except PairError as e:
        if isinstance(e.__cause__, MemoryError) or "can't allocate memory" in str(e):
            raise ConfigError(f"The model/guide pair does not fit in memory ({e}); lower model.latent_dim or the "
                              "hidden widths (model.decoder.hidden, guide.encoder.hidden).") from e
        raise
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train, device, group)
    trainer.setup(*next(data.batches(cfg.train.batch_size, shuffle=False)))  # binarized as in training
    seed_everything(cfg.train.seed)
    return data, trainer


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def load_run(run_dir: Path, overrides: Sequence[str] = (), trust: bool = False
             ) -> tuple[Config, Dataset, Trainer, dict]:
    """Rebuild a run's data and trainer from its folder and restore the checkpoint.

    ``overrides`` may change only the keys in ``RESUMABLE`` (say, a lower learning rate after
    a divergence, or more epochs); anything else would not fit the checkpoint. A ``.py`` file the
    folder's config names runs only if this user ran it before, or with ``trust`` (see
    :func:`ppvae.config.from_run_folder`).
    """
    with from_run_folder(run_dir, trust):
        return _load_run(Path(run_dir), overrides)


def _load_run(run_dir: Path, overrides: Sequence[str]) -> tuple[Config, Dataset, Trainer, dict]:
    if not (run_dir / runs.CONFIG).is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (it has no {runs.CONFIG}); give the folder "
                              "that 'ppvae run' printed.")
    try:
        raw = runs.read_json(run_dir / runs.CONFIG)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{run_dir / runs.CONFIG} cannot be read ({e}); the run folder is damaged.") from None
    cfg = build(raw)
    if overrides:
        new = build(raw, overrides)
        fixed = [k for k in changed_keys(to_dict(cfg), to_dict(new)) if not k.startswith(RESUMABLE)]
        if fixed:
            raise ConfigError(f"A resumed run cannot change {', '.join(fixed)}: the checkpoint was trained with "
                              f"them. Only {', '.join(k + '*' * k.endswith('.') for k in RESUMABLE)} can change "
                              "on --resume; start a new run for the rest.")
        cfg = new
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    data, trainer = prepare(cfg)
    check_standardization(run_dir, data)
    trainer.load_state_dict(state["trainer"])
    if cfg.train.epochs < trainer.epoch:
        raise ConfigError(f"train.epochs = {cfg.train.epochs} is fewer than the {trainer.epoch} epochs the checkpoint "
                          f"has trained; give train.epochs >= {trainer.epoch} (or evaluate it as it is with "
                          f"'ppvae eval {run_dir}').")
    return cfg, data, trainer, state


def check_standardization(run_dir: Path, data: Dataset) -> None:
    """The per-feature standardization the run trained with (``standardization.json``) is the one its data
    give now: else the data file has changed since, and the checkpoint does not fit it."""
    path = run_dir / runs.STANDARDIZATION
    if not path.is_file():
        return
    saved = runs.read_json(path)
    now = {"mean": data.shift, "sd": data.scale}
    if any(now[k] is None or not torch.allclose(now[k].cpu(), torch.tensor(saved[k]), rtol=1e-5, atol=1e-6)
           for k in now):
        raise DataError(f"The data of {run_dir} are not the ones it trained on: their per-feature mean and standard "
                        f"deviation differ from {path}. Point data.path at the original file (config.json names it).")


def _progress(total: int, initial: int, shown: bool = True) -> tqdm:
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, disable=None if shown else True)


def train(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer,
          on_epoch: Callable[[dict], None] | None = None) -> float:
    """Train to ``cfg.train.epochs``, writing per-epoch metrics and a checkpoint each epoch.

    Ctrl-C or SIGTERM saves the exact position and raises Interrupted; a diverging or failing
    step raises TrainingError and leaves the last good checkpoint alone. Either way the run
    folder's STATUS file says how to continue.
    """
    main = is_main()  # of a data-parallel run, rank 0 alone writes
    write = runs if main else _NoWrites

    def save() -> tuple[int, int]:
        write.save_checkpoint(run_dir / runs.CHECKPOINT, {"trainer": trainer.state_dict(), "config": to_dict(cfg)})
        return trainer.epoch, trainer.step

    # A crash between the two per-epoch writes leaves metrics.jsonl one epoch ahead of the checkpoint.
    history = runs.read_jsonl(run_dir / runs.EPOCHS)
    write.write_jsonl(run_dir / runs.EPOCHS, [r for r in history if r["epoch"] <= trainer.epoch])
    saved = (trainer.epoch, trainer.step) if (run_dir / runs.CHECKPOINT).is_file() else save()
    resume = f"ppvae run --resume {run_dir}"
    write.write_status(run_dir, f"running (pid {os.getpid()}; if that process is gone, it crashed: continue with: "
                                f"{resume})")
    steps_per_epoch = math.ceil(data.num_train / cfg.train.batch_size)
    start = time.perf_counter()
    try:
        with _progress(cfg.train.epochs * steps_per_epoch, trainer.step, main) as bar, stop_on_signals(trainer):
            while trainer.epoch < cfg.train.epochs and not trainer.validation.stopped:
                result = trainer.fit_epoch(data, on_batch=lambda: bar.update(1))
                record = dataclasses.asdict(result) | trainer.extra_metrics()
                if result.best:  # the best validation bound so far: these parameters are the run's best checkpoint
                    write.save_checkpoint(run_dir / runs.BEST,
                                          {"trainer": trainer.state_dict(), "config": to_dict(cfg)})
                write.append_jsonl(run_dir / runs.EPOCHS, record)
                saved = save()
                if on_epoch:
                    on_epoch(record)
                bar.set_postfix(loss=f"{result.train_loss:.2f}", test_elbo=f"{result.test_elbo:.2f}")
                if bar.disable and main:
                    valid = "" if result.valid_bound is None else f", validation bound {result.valid_bound:.3f}"
                    print(f"epoch {result.epoch}/{cfg.train.epochs}: train loss {result.train_loss:.3f}, "
                          f"test ELBO {result.test_elbo:.3f}{valid}", file=sys.stderr)
                trainer.raise_if_stopped()
    except Interrupted as e:
        save()
        message = f"{e} Its checkpoint is saved; continue with: {resume}"
        write.write_status(run_dir, f"interrupted: {message}")
        raise Interrupted(message, e.signum) from None
    except TrainingError as e:
        message = (f"{e} The last good checkpoint (epoch {saved[0]}, step {saved[1]}) is kept in {run_dir}; after "
                   f"fixing the cause continue from it with: {resume} (add e.g. train.lr=... to change the learning rate).")
        write.write_status(run_dir, f"failed: {message}")
        raise TrainingError(message) from e
    write.write_status(run_dir, _trained(trainer))
    return time.perf_counter() - start


class _NoWrites:
    """The run-folder writes of :func:`train` on a rank other than 0: none."""

    save_checkpoint = write_jsonl = append_jsonl = write_status = staticmethod(lambda *args: None)


def _trained(trainer: Trainer) -> str:
    v = trainer.validation
    early = (f" Stopped early: no better validation bound in the {v.waited} validations after epoch {v.best_epoch}."
             if v.stopped else "")
    return f"trained: {trainer.epoch} epochs, {trainer.step} steps.{early}"


def write_report(cfg: Config, run_dir: Path, metrics: dict, figs: list[Path], sections: list[tuple[str, str]]) -> None:
    """``report.md``: what was run, the summary metrics, notes, the analyses' sections and the figures."""
    m = cfg.model
    lines = [f"# {cfg.name or 'run'}", "", cfg.description, "",
             f"Data `{cfg.data.name}` (binarize: {metrics['binarization']}), "
             f"likelihood `{m.likelihood.name}`, prior `{m.prior.name}`, guide `{cfg.guide.family.name}`, "
             f"estimator `{cfg.estimator.name}`, latent size {m.latent_dim}, {cfg.train.epochs} epochs.", "",
             tables.markdown(["metric", "value", "unit", "meaning"],
                             [[k, v, *describe(k)] for k, v in metrics.items() if not isinstance(v, (dict, list))],
                             number=".4f")]
    notes = metrics.get("eval_notes", [])  # e.g. a point-mass guide: test_ll is not a bound
    lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""] if notes else []
    lines += [f"## {title}\n\n{body}" for title, body in sections]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    runs.write_bytes_atomic(run_dir / runs.REPORT, ("\n".join(lines) + "\n").encode())


def run(cfg: Config | None, out: Path | str = "runs", resume: Path | None = None,
        overrides: Sequence[str] = (), trust: bool = False, folder: Path | None = None) -> Path:
    """Train, evaluate and write a run folder (a new one under ``out``, or ``folder`` itself: a
    study's runs have fixed folders); with ``resume`` continue an existing one, applying
    ``overrides`` (only keys in ``RESUMABLE``; ``trust``: see :func:`load_run`)."""
    with contextlib.ExitStack() as stack:
        stack.callback(distributed.leave)
        trackers = Trackers()
        stack.callback(trackers.call, "close")
        if resume is not None:
            run_dir = Path(resume)
            if is_main():
                stack.enter_context(runs.owned_if_run_folder(run_dir))
            cfg, data, trainer, _ = load_run(run_dir, overrides, trust)
            runs.read_jsonl(run_dir / runs.EPOCHS)  # readable, before config.json takes the overrides
            if is_main():
                runs.write_json(run_dir / runs.CONFIG, to_dict(cfg))
                trackers.start(cfg, run_dir, resumed=True)
        else:
            cfg = absolute_paths(cfg)
            if is_main():
                trackers.create(cfg)  # a missing tracker package is refused before any data are loaded
            data, trainer = prepare(cfg)
            run_dir = None
            if is_main():
                run_dir = runs.new_run_dir(out, cfg.name or "run") if folder is None else runs.make_dir(Path(folder))
                stack.enter_context(runs.owned(run_dir))
                runs.write_json(run_dir / runs.CONFIG, to_dict(cfg))
                if data.shift is not None:
                    runs.write_json(run_dir / runs.STANDARDIZATION, {"mean": data.shift.tolist(),
                                                                     "sd": data.scale.tolist()})
                trackers.start(cfg, run_dir, resumed=False)
            if trainer.group:
                run_dir = Path(trainer.group.broadcast_text(None if run_dir is None else str(run_dir)))
        seconds = train(cfg, run_dir, data, trainer, lambda record: trackers.call("epoch", record))
        if is_main():  # rank 0 evaluates; the other ranks of a data-parallel run are done
            metrics = finish(cfg, run_dir, data, trainer, {"train_seconds_this_session": seconds})
            trackers.call("finish", metrics, sorted(run_dir.glob("*.png")))
    return run_dir


class Trackers:
    """The run's loggers (``[log.<name>]``). One that fails while the run goes on is named in a warning and
    dropped: the run folder holds everything it would have had."""

    def __init__(self) -> None:
        self.loggers: list = []

    def create(self, cfg: Config) -> None:
        self.loggers = [spec.create() for spec in cfg.log.loggers.values()]

    def start(self, cfg: Config, run_dir: Path, resumed: bool) -> None:
        if not self.loggers:
            self.create(cfg)
        self.call("start", to_dict(cfg), run_dir, resumed)

    def call(self, hook: str, *args: object) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, hook)(*args)
            except Exception as e:  # a tracker's failure must not cost the run
                log.warning("logger %s failed in %s (%s); the run goes on without it, its folder holds everything.",
                            type(logger).__name__, hook, one_line(e))
                self.loggers.remove(logger)


def is_main() -> bool:
    """Whether this process writes the run folder: a run of its own, or rank 0 of a data-parallel one."""
    return int(os.environ.get("RANK", "0")) == 0


def finish(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer, extra: dict | None = None,
           shards: Callable[[int], Pointwise] | None = None) -> dict:
    """Evaluate, draw the figures, run the enabled analyses, write ``metrics.json``, ``pointwise.npz`` and
    ``report.md``; returns the metrics.

    Ctrl-C or SIGTERM stops the evaluation at once (it has nothing worth saving half-way), and
    STATUS then says "trained, not evaluated" and how to evaluate; so does a refused evaluation.
    """
    evaluate = f"ppvae eval {run_dir}"
    try:
        with interrupt_on_signals():
            metrics = _evaluate(cfg, run_dir, data, trainer, extra, shards)
    except PPVAEError as e:
        earlier = " metrics.json still holds the earlier evaluation." if (run_dir / runs.METRICS).is_file() else ""
        runs.write_status(run_dir, f"trained, not evaluated ({trainer.epoch} epochs, {trainer.step} steps): {e}"
                                   f"{earlier} Evaluate with: {evaluate}")
        if isinstance(e, Interrupted):
            raise Interrupted(f"{e} The trained run is kept; evaluate it with: {evaluate}", e.signum) from None
        raise
    runs.write_status(run_dir, f"{_trained(trainer)} Evaluated: {metrics['evaluation']} (in metrics.json).")
    return metrics


def _evaluate(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer, extra: dict | None,
              shards: Callable[[int], Pointwise] | None) -> dict:
    """The work of :func:`finish`.

    The log-weight matrix is saved only when it fits ``eval.log_weights_mb``: evaluation is
    seeded, so ``ppvae eval`` recomputes the same matrix. Evaluation, figures and analyses run in
    evaluation mode (batch norm uses its running statistics, a denoising guide sees clean
    inputs), except an analysis that asks for training mode (the gradient study: the objective
    that was trained).
    """
    model, guide = trainer.model, trainer.guide
    checkpoint = evaluated_checkpoint(cfg, run_dir, trainer, data)
    x, y = test_points(cfg, data)
    with eval_mode(model, guide):
        pyro.set_rng_seed(cfg.train.seed + 1)
        result = evaluate_detailed(model, guide, x, y, k=cfg.eval.k, chunk_size=cfg.eval.chunk_size,
                                   keep_log_weights=keeps_log_weights(cfg, x), max_hours=cfg.eval.max_hours,
                                   shards=shards)
        result.save(run_dir)
        metrics = result.metrics | collapse_diagnostics(model, guide, x, y)
        hist = runs.read_jsonl(run_dir / runs.EPOCHS)
        metrics |= {
            "final_train_loss": hist[-1]["train_loss"] if hist else float("nan"),
            "epochs": trainer.epoch,
            "steps": trainer.step,
            "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(1, len(hist)),
            "estimator": cfg.estimator.name,
            "estimator_notes": trainer.estimator.notes,
            "binarization": data.binarization,
            "device": str(trainer.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
                         "ppvae": _version()},
        } | checkpoint | trainer.extra_metrics() | (extra or {})
        figs = run_figures(model, guide, data, run_dir)
    sections = []
    ctx = RunContext(run_dir, cfg.name or "run", data, model, guide, trainer.params, cfg.train.seed, cfg.data.seed,
                     x.shape[0], metrics)
    for name, spec in cfg.eval.analyses.items():
        analysis = spec.create()
        failed = f"The analysis eval.{name} failed (the trained run is saved: ppvae eval {run_dir} retries it)"
        with reported_as(failed, PPVAEError):
            if analysis.training_mode:
                with kept_buffers(model, guide):
                    out = analysis.run(ctx)
            else:
                with eval_mode(model, guide):
                    out = analysis.run(ctx)
        metrics |= out.metrics
        figs += out.figures
        if out.report:
            sections.append((analysis.title or name, out.report))
    key = evaluation_key(metrics)
    previous = runs.read_json(run_dir / runs.METRICS) if (run_dir / runs.METRICS).is_file() else {}
    carried = {k: v for k, v in previous.items() if k.startswith("train_seconds") and k not in metrics}
    metrics = {"evaluation": key} | metrics | carried
    (run_dir / runs.EVALUATIONS).mkdir(exist_ok=True)
    if previous and "evaluation" not in previous:  # written before records existed: keep it as one
        runs.write_json(run_dir / runs.EVALUATIONS / f"{evaluation_key(previous)}.json", previous)
    runs.write_json(run_dir / runs.EVALUATIONS / f"{key}.json", metrics)  # kept beside earlier evaluations
    runs.write_json(run_dir / runs.METRICS, metrics)  # the latest, which the report and figures show
    write_report(cfg, run_dir, metrics, figs, sections)
    return metrics


def evaluated_checkpoint(cfg: Config, run_dir: Path, trainer: Trainer, data: Dataset) -> dict:
    """Load the parameters evaluation uses (``eval.checkpoint``: the best validation bound's, when the
    run has them, or the last) into ``trainer`` and prepare them as evaluation does (the pair's
    ``before_evaluation`` hooks over the training set, e.g. a closed-form sigma fitted to all of it, not
    to the last minibatch); what ``metrics.json`` says of them."""
    said = {"evaluated_checkpoint": "last"}
    if cfg.eval.checkpoint == "best" and (run_dir / runs.BEST).is_file():
        trainer.load_weights(runs.load_checkpoint(run_dir / runs.BEST)["trainer"])
        v = trainer.validation
        said = {"evaluated_checkpoint": f"best (epoch {v.best_epoch})", "best_epoch": v.best_epoch,
                "best_valid_bound": v.best, "stopped_early": v.stopped}
    with eval_mode(trainer.model, trainer.guide):
        trainer.before_evaluation(data)
    return said


def test_points(cfg: Config, data: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The test points evaluation scores: the first ``eval.num_test`` (0: all)."""
    n = cfg.eval.num_test or data.test_x.shape[0]
    return data.test_x[:n], None if data.test_y is None else data.test_y[:n]


def keeps_log_weights(cfg: Config, x: torch.Tensor) -> bool:
    """Whether the N x k log-weight matrix fits ``eval.log_weights_mb`` (as float16) and is saved."""
    return x.shape[0] * cfg.eval.k * 2 <= cfg.eval.log_weights_mb * 2**20


def _version() -> str:
    try:
        return importlib.metadata.version("ppvae")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def evaluation_key(metrics: dict) -> str:
    """The name of an evaluation's record: its samples, test points, seed and checkpoint."""
    which = str(metrics.get("evaluated_checkpoint", "last")).split(" ")[0]
    k, n, seed = (metrics.get(name, "unknown") for name in ("eval_k", "eval_points", "eval_seed"))
    return f"k{k}-n{n}-seed{seed}-{which}"
