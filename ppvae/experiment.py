"""One experiment, end to end: config -> data -> pair -> training -> evaluation -> run folder."""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from ppvae import gradients, plots, runs, theory
from ppvae.build import build_pair
from ppvae.config import Config, apply_overrides, from_dict, to_dict
from ppvae.contract import reported_as
from ppvae.data import Dataset, load_dataset
from ppvae.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingError
from ppvae.estimators import make_estimator
from ppvae.evaluate import decode_mean, evaluate_detailed, log_likelihood, posterior_mean, prior_samples
from ppvae.sample_quality import generation_metrics
from ppvae.sampling import decoder_figures, uncertainty_figures
from ppvae.train import Trainer, resolve_device, seed_everything, stop_on_signals
from ppvae.nn import eval_mode

RESUMABLE = ("train.epochs", "train.lr", "train.device", "eval.")  # what ``--resume`` overrides may change


def _absolute_pair(cfg: Config) -> Config:
    """Store a user pair's file path absolutely so the run folder works from anywhere."""
    target, sep, func = cfg.model.pair.rpartition(":")
    if sep and target.endswith(".py"):
        model = dataclasses.replace(cfg.model, pair=f"{Path(target).resolve()}:{func}")
        return dataclasses.replace(cfg, model=model)
    return cfg


def prepare(cfg: Config) -> tuple[Dataset, Trainer]:
    """Load data, build the pair and a set-up trainer (parameters and optimizer exist).

    Whatever is wrong with the input fails here, before any step, as one ppvae error.
    """
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.data).to(device)
    if data.train_x.shape[0] == 0:
        raise DataError(f"The training set of {cfg.data.name!r} is empty; lower data.test_fraction "
                        "or raise data.max_train.")
    with reported_as("Building the model/guide pair failed"):
        model, guide = build_pair(cfg, data)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train, device)
    trainer.setup(*next(data.batches(cfg.train.batch_size, shuffle=False)))  # binarized as in training
    seed_everything(cfg.train.seed)
    return data, trainer


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def load_run(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[Config, Dataset, Trainer, dict]:
    """Rebuild a run's data and trainer from its folder and restore the checkpoint.

    ``overrides`` may change only the keys in ``RESUMABLE`` (say, a lower learning rate after
    a divergence, or more epochs); anything else would not fit the checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (it has no {runs.CONFIG}); give the folder "
                              "that 'ppvae run' printed.")
    try:
        raw = runs.read_json(run_dir / runs.CONFIG)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{run_dir / runs.CONFIG} cannot be read ({e}); the run folder is damaged.") from None
    cfg = from_dict(raw)
    if overrides:
        new = from_dict(apply_overrides(copy.deepcopy(raw), list(overrides)))
        fixed = [k for k in _changed_keys(to_dict(cfg), to_dict(new)) if not k.startswith(RESUMABLE)]
        if fixed:
            raise ConfigError(f"A resumed run cannot change {', '.join(fixed)}: the checkpoint was trained with "
                              f"them. Only {', '.join(k + '*' * k.endswith('.') for k in RESUMABLE)} can change "
                              "on --resume; start a new run for the rest.")
        cfg = new
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    data, trainer = prepare(cfg)
    trainer.load_state_dict(state["trainer"])
    return cfg, data, trainer, state


def _progress(total: int, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, disable=None)


def train(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer) -> float:
    """Train to ``cfg.train.epochs``, writing per-epoch metrics and a checkpoint each epoch.

    Ctrl-C or SIGTERM saves the exact position and raises Interrupted; a diverging or failing
    step raises TrainingError and leaves the last good checkpoint alone. Either way the run
    folder's STATUS file says how to continue.
    """
    def save() -> tuple[int, int]:
        runs.save_checkpoint(run_dir / runs.CHECKPOINT, {"trainer": trainer.state_dict(), "config": to_dict(cfg)})
        return trainer.epoch, trainer.step

    # A crash between the two per-epoch writes leaves metrics.jsonl one epoch ahead of the checkpoint.
    history = runs.read_jsonl(run_dir / runs.EPOCHS)
    runs.write_jsonl(run_dir / runs.EPOCHS, [r for r in history if r["epoch"] <= trainer.epoch])
    saved = (trainer.epoch, trainer.step) if (run_dir / runs.CHECKPOINT).is_file() else save()
    resume = f"ppvae run --resume {run_dir}"
    runs.write_status(run_dir, f"running (or crashed: if no process is training it, continue with: {resume})")
    steps_per_epoch = math.ceil(data.train_x.shape[0] / cfg.train.batch_size)
    start = time.perf_counter()
    try:
        with _progress(cfg.train.epochs * steps_per_epoch, trainer.step) as bar, stop_on_signals(trainer):
            while trainer.epoch < cfg.train.epochs:
                result = trainer.fit_epoch(data, on_batch=lambda: bar.update(1))
                record = dataclasses.asdict(result) | trainer.extra_metrics()
                runs.append_jsonl(run_dir / runs.EPOCHS, record)
                saved = save()
                bar.set_postfix(loss=f"{result.train_loss:.2f}", test_elbo=f"{result.test_elbo:.2f}")
                if bar.disable:
                    print(f"epoch {result.epoch}/{cfg.train.epochs}: train loss {result.train_loss:.3f}, "
                          f"test ELBO {result.test_elbo:.3f}", file=sys.stderr)
                trainer.raise_if_stopped()
    except Interrupted as e:
        save()
        message = f"{e} Its checkpoint is saved; continue with: {resume}"
        runs.write_status(run_dir, f"interrupted: {message}")
        raise Interrupted(message, e.signum) from None
    except TrainingError as e:
        message = (f"{e} The last good checkpoint (epoch {saved[0]}, step {saved[1]}) is kept in {run_dir}; after "
                   f"fixing the cause continue from it with: {resume} (add e.g. train.lr=... to change the learning rate).")
        runs.write_status(run_dir, f"failed: {message}")
        raise TrainingError(message) from e
    runs.write_status(run_dir, f"trained: {trainer.epoch} epochs, {trainer.step} steps.")
    return time.perf_counter() - start


def figures(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer) -> list[Path]:
    """Reconstructions, prior samples, ELBO curves, and the 2-D latent map and manifold."""
    model, guide = trainer.model, trainer.guide
    x, y = data.test_x[:32], None if data.test_y is None else data.test_y[:32]
    shape = data.image_shape
    z = posterior_mean(guide, x, y)
    recon = decode_mean(model, z, x, y)
    pairs = torch.stack([x[:16], recon[:16], x[16:32], recon[16:32]]).reshape(-1, x.shape[1])
    out = [plots.image_grid(pairs.cpu().numpy(), shape, run_dir / "reconstructions.png", rows=4,
                            title="test images and reconstructions", row_labels=["data", "recon", "data", "recon"])]
    # labels for conditional pairs (ignored by others): one class per row of 8 samples
    classes = data.num_classes if data.train_y is not None else 0
    labels = torch.arange(classes, device=x.device).repeat_interleave(8) if classes else None
    samples = prior_samples(model, x, 8 * classes if classes else 64, labels)
    out.append(plots.image_grid(samples.cpu().numpy(), shape, run_dir / "samples.png", rows=classes or None,
                                title="samples from the prior (means)"))
    hist = runs.read_jsonl(run_dir / runs.EPOCHS)
    epochs = [h["epoch"] for h in hist]
    out.append(plots.curves({"train (objective)": (epochs, [-h["train_loss"] for h in hist]),
                             "test ELBO": (epochs, [h["test_elbo"] for h in hist])},
                            run_dir / "elbo.png", title="lower bound per example"))
    latent_dim = z.shape[-1]
    if latent_dim == 2:
        n = min(2000, data.test_x.shape[0])
        ty = None if data.test_y is None else data.test_y[:n]
        zt = posterior_mean(guide, data.test_x[:n], ty)
        out.append(plots.latent_scatter(zt.cpu().numpy(), None if ty is None else ty.cpu().numpy(),
                                        run_dir / "latent.png"))
        grid = torch.linspace(0.05, 0.95, 15, device=x.device)
        normal = torch.distributions.Normal(0.0, 1.0)
        zz = torch.cartesian_prod(normal.icdf(grid), normal.icdf(grid)).flip(-1)
        manifold = decode_mean(model, zz, x, None if labels is None else labels[:1].expand(len(zz)))
        out.append(plots.image_grid(manifold.cpu().numpy(), shape, run_dir / "manifold.png", rows=15,
                                    title="learned manifold (inverse-CDF grid)"))
    return out + uncertainty_figures(model, guide, data, run_dir)


def write_report(cfg: Config, run_dir: Path, metrics: dict, figs: list[Path]) -> None:
    lines = [f"# {cfg.name or 'run'}", "", cfg.description, "",
             f"Data `{cfg.data.name}` (binarize: {cfg.data.binarize}), likelihood `{cfg.model.likelihood}`, "
             f"prior `{cfg.model.prior}`, guide `{cfg.guide.family}`, estimator `{cfg.estimator.name}`, "
             f"latent size {cfg.model.latent_dim}, {cfg.train.epochs} epochs.", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
              if not isinstance(v, (dict, list))]
    notes = metrics.get("eval_notes", [])  # e.g. a point-mass guide: test_ll is not a bound
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes] if notes else []
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    runs.write_bytes_atomic(run_dir / runs.REPORT, ("\n".join(lines) + "\n").encode())


def run(cfg: Config | None, out: Path | str = "runs", resume: Path | None = None,
        overrides: Sequence[str] = ()) -> Path:
    """Train, evaluate and write a run folder; with ``resume`` continue an existing one,
    applying ``overrides`` (only keys in ``RESUMABLE``)."""
    if resume is not None:
        run_dir = Path(resume)
        cfg, data, trainer, _ = load_run(run_dir, overrides)
        runs.write_json(run_dir / runs.CONFIG, to_dict(cfg))
    else:
        cfg = _absolute_pair(cfg)
        data, trainer = prepare(cfg)
        run_dir = runs.new_run_dir(out, cfg.name or "run")
        runs.write_json(run_dir / runs.CONFIG, to_dict(cfg))
    seconds = train(cfg, run_dir, data, trainer)
    finish(cfg, run_dir, data, trainer, {"train_seconds_this_session": seconds})
    return run_dir


def finish(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer, extra: dict | None = None) -> dict:
    """Evaluate, draw figures, write ``metrics.json``, ``pointwise.npz`` and ``report.md``; returns the metrics.

    The log-weight matrix is saved only when it fits ``eval.log_weights_mb``: evaluation is
    seeded, so ``ppvae eval`` recomputes the same matrix; with ``eval.gradient_study`` the
    gradient-estimator study runs last, at the trained parameters, in training mode (the
    objective that was trained).
    """
    # evaluation mode: batch norm uses its running statistics, a denoising guide sees clean inputs
    with eval_mode(trainer.model, trainer.guide):
        n = cfg.eval.num_test or data.test_x.shape[0]
        y = None if data.test_y is None else data.test_y[:n]
        pyro.set_rng_seed(cfg.train.seed + 1)
        keep = n * cfg.eval.k * 2 <= cfg.eval.log_weights_mb * 2**20  # float16
        result = evaluate_detailed(trainer.model, trainer.guide, data.test_x[:n], y, k=cfg.eval.k,
                                   chunk_size=cfg.eval.chunk_size, keep_log_weights=keep)
        result.save(run_dir)
        metrics = result.metrics
        hist = runs.read_jsonl(run_dir / runs.EPOCHS)
        metrics |= {
            "final_train_loss": hist[-1]["train_loss"] if hist else float("nan"),
            "epochs": trainer.epoch,
            "steps": trainer.step,
            "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(1, len(hist)),
            "estimator": cfg.estimator.name,
            "estimator_notes": trainer.estimator.notes,
            "binarization": cfg.data.binarize,
            "device": str(trainer.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__},
        } | trainer.extra_metrics() | (extra or {})
        for k in cfg.eval.extra_k:  # e.g. the k = 20 bound beside k = 5000, on the same points
            ll = log_likelihood(trainer.model, trainer.guide, data.test_x[:n], y, k=k, chunk_size=cfg.eval.chunk_size)["ll"]
            metrics[f"test_ll_k{k}"] = ll.mean().item()
        figs = figures(cfg, run_dir, data, trainer)
        if cfg.eval.sample_quality:
            quality, quality_figs = generation_metrics(cfg, run_dir, data, trainer.model, trainer.guide)
            metrics |= quality
            figs += quality_figs
        if cfg.eval.decoder_figures:
            figs += decoder_figures(trainer.model, trainer.guide, data, run_dir)
        sections = []
        if cfg.eval.theory:
            metrics |= theory.metrics(trainer.model, trainer.guide, data, n, cfg.model.latent_dim,
                                      cfg.eval.gmm_components, cfg.train.seed)
            sections.append(("Theory vs practice", theory.report(metrics)))
    if cfg.eval.gradient_study:
        rows = gradients.run_study(cfg, data, trainer.model, trainer.guide, trainer.params)
        paths, study = gradients.write(run_dir, rows, cfg.eval.gradient_repeats)
        metrics["gradient_study"] = rows
        figs.append(paths[-1])
        sections.append(("Gradient-estimator study", study))
    runs.write_json(run_dir / runs.METRICS, metrics)
    write_report(cfg, run_dir, metrics, figs)
    if sections:
        report = run_dir / runs.REPORT
        text = "".join(f"\n## {title}\n\n{body}" for title, body in sections)
        runs.write_bytes_atomic(report, report.read_bytes() + text.encode())
    return metrics
