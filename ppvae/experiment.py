"""One experiment, end to end: config -> data -> pair -> training -> evaluation -> run folder."""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from ppvae import plots, runs
from ppvae.build import build_pair
from ppvae.config import Config, from_dict, to_dict
from ppvae.data import Dataset, load_dataset
from ppvae.estimators import make_estimator
from ppvae.evaluate import decode_mean, evaluate, posterior_mean, prior_samples
from ppvae.train import Trainer, resolve_device, seed_everything


def _absolute_pair(cfg: Config) -> Config:
    """Store a user pair's file path absolutely so the run folder works from anywhere."""
    target, sep, func = cfg.model.pair.rpartition(":")
    if sep and target.endswith(".py"):
        model = dataclasses.replace(cfg.model, pair=f"{Path(target).resolve()}:{func}")
        return dataclasses.replace(cfg, model=model)
    return cfg


def prepare(cfg: Config) -> tuple[Dataset, Trainer]:
    """Load data, build the pair and a set-up trainer (parameters and optimizer exist)."""
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.data).to(device)
    model, guide = build_pair(cfg, data)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train, device)
    trainer.setup(*next(data.batches(cfg.train.batch_size, shuffle=False)))  # binarized as in training
    seed_everything(cfg.train.seed)
    return data, trainer


def load_run(run_dir: Path) -> tuple[Config, Dataset, Trainer, dict]:
    """Rebuild a run's data and trainer from its folder and restore the checkpoint."""
    run_dir = Path(run_dir)
    cfg = from_dict(runs.read_json(run_dir / runs.CONFIG))
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    data, trainer = prepare(cfg)
    trainer.load_state_dict(state["trainer"])
    return cfg, data, trainer, state


def _progress(total: int, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, disable=None)


def train(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer) -> float:
    """Train to ``cfg.train.epochs``, writing per-epoch metrics and a checkpoint each epoch."""
    steps_per_epoch = math.ceil(data.train_x.shape[0] / cfg.train.batch_size)
    start = time.perf_counter()
    with _progress(cfg.train.epochs * steps_per_epoch, trainer.step) as bar:
        while trainer.epoch < cfg.train.epochs:
            result = trainer.fit_epoch(data, on_batch=lambda: bar.update(1))
            record = dataclasses.asdict(result) | trainer.extra_metrics()
            runs.append_jsonl(run_dir / runs.EPOCHS, record)
            runs.save_checkpoint(run_dir / runs.CHECKPOINT, {"trainer": trainer.state_dict(), "config": to_dict(cfg)})
            bar.set_postfix(loss=f"{result.train_loss:.2f}", test_elbo=f"{result.test_elbo:.2f}")
            if bar.disable:
                print(f"epoch {result.epoch}/{cfg.train.epochs}: train loss {result.train_loss:.3f}, "
                      f"test ELBO {result.test_elbo:.3f}", file=sys.stderr)
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
    samples = prior_samples(model, x, 64)
    out.append(plots.image_grid(samples.cpu().numpy(), shape, run_dir / "samples.png", title="samples from the prior (means)"))
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
        manifold = decode_mean(model, zz, x)
        out.append(plots.image_grid(manifold.cpu().numpy(), shape, run_dir / "manifold.png", rows=15,
                                    title="learned manifold (inverse-CDF grid)"))
    return out


def write_report(cfg: Config, run_dir: Path, metrics: dict, figs: list[Path]) -> None:
    lines = [f"# {cfg.name or 'run'}", "", cfg.description, "",
             f"Data `{cfg.data.name}` (binarize: {cfg.data.binarize}), likelihood `{cfg.model.likelihood}`, "
             f"prior `{cfg.model.prior}`, guide `{cfg.guide.family}`, estimator `{cfg.estimator.name}`, "
             f"latent size {cfg.model.latent_dim}, {cfg.train.epochs} epochs.", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
              if not isinstance(v, (dict, list))]
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    runs.write_bytes_atomic(run_dir / runs.REPORT, ("\n".join(lines) + "\n").encode())


def run(cfg: Config, out: Path | str = "runs", resume: Path | None = None) -> Path:
    """Train, evaluate and write a run folder; with ``resume`` continue an existing one."""
    if resume is not None:
        run_dir = Path(resume)
        cfg, data, trainer, _ = load_run(run_dir)
    else:
        cfg = _absolute_pair(cfg)
        data, trainer = prepare(cfg)
        run_dir = runs.new_run_dir(out, cfg.name or "run")
        runs.write_json(run_dir / runs.CONFIG, to_dict(cfg))
    seconds = train(cfg, run_dir, data, trainer)
    finish(cfg, run_dir, data, trainer, {"train_seconds_this_session": seconds})
    return run_dir


def finish(cfg: Config, run_dir: Path, data: Dataset, trainer: Trainer, extra: dict | None = None) -> dict:
    """Evaluate, draw figures, write ``metrics.json`` and ``report.md``; returns the metrics."""
    n = cfg.eval.num_test or data.test_x.shape[0]
    y = None if data.test_y is None else data.test_y[:n]
    pyro.set_rng_seed(cfg.train.seed + 1)
    metrics = evaluate(trainer.model, trainer.guide, data.test_x[:n], y, k=cfg.eval.k, chunk_size=cfg.eval.chunk_size)
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
    figs = figures(cfg, run_dir, data, trainer)
    runs.write_json(run_dir / runs.METRICS, metrics)
    write_report(cfg, run_dir, metrics, figs)
    return metrics
