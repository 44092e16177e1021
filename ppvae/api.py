"""The Python API for notebooks and scripts: ``ppvae.run`` trains a run, ``ppvae.load`` opens one.

Both give a :class:`Run`, the same run folder the command line writes (the folder stays the
source of truth), with the trained pair loaded for sampling, reconstructing, encoding,
re-evaluating and drawing figures::

    import ppvae
    run = ppvae.run("quickstart", train={"epochs": 5})   # or a .toml path, or a dict
    run.metrics["test_ll"], run.folder
    images = run.sample(16)                               # [16, *image_shape], means of p(x|z)
    same = ppvae.load(run.folder)                         # later, from its folder
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ppvae import config, registry, runs
from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError, DataError
from ppvae.evaluation.figures import run_figures
from ppvae.evaluation.sampling import DEFAULT_COMPONENTS, decode, draw_latents, fit_aggregate
from ppvae.infer.trainer import Trainer
from ppvae.nn import eval_mode
from ppvae.sites import posterior_means
from ppvae.studies import run as experiment


@dataclasses.dataclass
class Run:
    """A trained run: its folder, config, data and trainer (whose ``model`` and ``guide`` hold the
    parameters evaluation uses: the best validation checkpoint's where ``eval.checkpoint = "best"``)."""

    folder: Path
    config: Config
    data: Dataset
    trainer: Trainer

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    @property
    def guide(self) -> torch.nn.Module:
        return self.trainer.guide

    @property
    def metrics(self) -> dict:
        """The latest evaluation (``metrics.json``); {} for a run not evaluated yet."""
        path = self.folder / runs.METRICS
        return runs.read_json(path) if path.is_file() else {}

    @property
    def history(self) -> list[dict]:
        """One record per trained epoch (``metrics.jsonl``)."""
        return runs.read_jsonl(self.folder / runs.EPOCHS)

    def sample(self, n: int = 64, source: str = "prior", components: int = DEFAULT_COMPONENTS,
               seed: int = 0) -> torch.Tensor:
        """``n`` images E[x|z], z from the prior or (``source="aggregate"``) a Gaussian mixture of
        ``components`` fit to the training set's posterior means; shape ``[n, *image_shape]``. Like every
        method here it speaks the data's own units (a standardization is undone)."""
        if self.config.model.conditional:
            raise ConfigError("Run.sample draws unconditional samples; this run is a conditional VAE.")
        with eval_mode(self.model, self.guide):
            pyro.set_rng_seed(seed)
            mixture = (fit_aggregate(posterior_means(self.guide, self.data.train_x, self.data.train_y), components,
                                     seed) if source == "aggregate" else None)
            mean, _ = decode(self.model, draw_latents(source, n, self.model, self.data.train_x, mixture),
                             self.data.train_x)
        return self.data.original(mean).reshape(n, *self.data.image_shape).cpu()

    def encode(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior means E_q[z | x] of images ``x`` (``[N, D]`` or ``[N, *image_shape]``): ``[N, latent_dim]``."""
        with eval_mode(self.model, self.guide):
            return posterior_means(self.guide, self._rows(x), self._labels(y)).cpu()

    def reconstruct(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] at z = E_q[z | x]: the reconstructions the figures show, in the shape ``x`` came in."""
        rows, labels = self._rows(x), self._labels(y)
        with eval_mode(self.model, self.guide):
            mean, _ = decode(self.model, posterior_means(self.guide, rows, labels), rows, labels)
        return self.data.original(mean).reshape(np.shape(x)).cpu()

    def evaluate(self, k: int | None = None, **eval_settings: Any) -> dict:
        """Evaluate again (``ppvae eval``): ``k`` importance samples and any ``eval.*`` setting, e.g.
        ``run.evaluate(k=1000, num_test=500)``; adds a record under ``evaluations/`` and returns the metrics."""
        settings = eval_settings | ({} if k is None else {"k": k})
        cfg = config.build(self.config.to_dict(), overrides(eval=settings))
        with runs.owned(self.folder):
            return experiment.finish(cfg, self.folder, self.data, self.trainer)

    def figures(self) -> list[Path]:
        """Draw the standard figures into the run folder again; their paths."""
        with eval_mode(self.model, self.guide):
            return run_figures(self.model, self.guide, self.data, self.folder)

    def _rows(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
        rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)
        if rows.shape[1] != self.data.x_dim:
            raise DataError(f"x has {rows.shape[1]} values per point; this run's data have {self.data.x_dim} "
                            f"(image shape {self.data.image_shape}).")
        return self.data.standardized(rows.to(self.trainer.device))

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None and self.config.model.conditional:
            raise ConfigError("This run is a conditional VAE: give the labels y as well.")
        return None if y is None else torch.as_tensor(y, dtype=torch.int64, device=self.trainer.device)


def overrides(**sections: Any) -> list[str]:
    """Python keyword overrides as the command line's ``key=value`` strings: ``train={"epochs": 5}`` and
    ``**{"train.epochs": 5}`` both give ``train.epochs=5``."""
    out = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            out.append(f"{prefix}={registry.toml_value(value)}")

    for key, value in sections.items():
        walk(key, value)
    return out


def run(experiment_or_config: str | Path | Mapping | Config, /, *, out: str | Path = "runs",
        **settings: Any) -> Run:
    """Train and evaluate a run (what ``ppvae run`` does) and open it. ``experiment_or_config``: a bundled
    experiment's name, a ``.toml`` path, a config dict or a :class:`~ppvae.config.Config`; ``settings``
    override it by section (``train={"epochs": 5}``) or dotted key (``**{"train.epochs": 5}``)."""
    changes = overrides(**settings)
    if isinstance(experiment_or_config, (str, Path)):
        cfg = config.load(str(experiment_or_config), changes)
    else:
        raw = experiment_or_config.to_dict() if isinstance(experiment_or_config, Config) else experiment_or_config
        cfg = config.build(dict(raw), changes)
    return load(experiment.run(cfg, out=out))


def load(run_dir: str | Path, trust: bool = False) -> Run:
    """Open a run folder: its config, data and the parameters its evaluation uses. ``trust``: run the
    ``.py`` files its config names even if you have not run them before (``--trust-pair``)."""
    folder = Path(run_dir)
    with runs.owned_if_run_folder(folder):
        cfg, data, trainer, _ = experiment.load_run(folder, trust=trust)
        experiment.evaluated_checkpoint(cfg, folder, trainer, data)
    return Run(folder, cfg, data, trainer)


__all__ = ["Run", "run", "load", "overrides"]
