"""Training: torch.optim steps on an estimator's loss, for any model/guide pair.

Parameters are collected the Pyro way (a ``param_only`` trace of one loss evaluation), so
pairs built from ``pyro.module``, ``PyroModule`` or plain ``pyro.param`` all train the same.
Losses are summed on the device and read once per epoch: no host sync per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ppvae.config import TrainConfig
from ppvae.data import Dataset
from ppvae.estimators import Estimator
from ppvae.importance import iwae_bound, log_weights

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from ppvae.errors import ConfigError

        raise ConfigError("train.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # python, numpy and torch


@dataclass
class EpochResult:
    epoch: int
    step: int
    train_loss: float  # -objective per data point, averaged over the epoch
    test_elbo: float
    beta: float
    seconds: float


class Trainer:
    """Fits a model/guide pair with an estimator; owns the optimizer and the step counter.

    Pyro keeps parameters in one global store, so a Trainer clears it on creation: train
    one pair per process at a time (as Pyro's own SVI does).
    """

    def __init__(self, model: Callable, guide: Callable, estimator: Estimator, cfg: TrainConfig,
                 device: torch.device | str = "cpu"):
        self.model, self.guide, self.estimator, self.cfg = model, guide, estimator, cfg
        self.device = torch.device(device)
        for part in (model, guide):
            if isinstance(part, torch.nn.Module):
                part.to(self.device)
        self.params: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch = 0
        self.step = 0
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        pyro.clear_param_store()

    # ------------------------------------------------------------------ set-up

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Check the pair with the estimator, materialize parameters, build the optimizer."""
        self.estimator.check(self.model, self.guide, x, y)
        with poutine.trace(param_only=True) as capture:
            self.estimator(self.model, self.guide, x, y)
        self.params = {name: site["value"].unconstrained() for name, site in sorted(capture.trace.nodes.items())}
        opt = OPTIMIZERS[self.cfg.optimizer]
        self.optimizer = opt(list(self.params.values()), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # ------------------------------------------------------------------ steps

    def beta_at(self, step: int, steps_per_epoch: int) -> float:
        cfg = self.estimator.cfg
        if not cfg.anneal_epochs:
            return cfg.beta
        t = min(1.0, step / (cfg.anneal_epochs * steps_per_epoch))
        return cfg.beta_start + t * (cfg.beta - cfg.beta_start)

    def train_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step; returns the batch's summed loss as a device tensor."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.estimator.backward(self.model, self.guide, x, y, scale=1.0 / x.shape[0])
        self.optimizer.step()
        self.step += 1
        return loss

    def run_epoch(self, data: Dataset) -> Iterator[torch.Tensor]:
        """Train one epoch over ``data``; yields each batch's loss (for progress bars)."""
        steps_per_epoch = -(-data.train_x.shape[0] // self.cfg.batch_size)
        for x, y in data.batches(self.cfg.batch_size, self.shuffle):
            self.estimator.beta = self.beta_at(self.step, steps_per_epoch)
            yield self.train_step(x, y)
        self.epoch += 1

    def fit_epoch(self, data: Dataset, on_batch: Callable[[], None] | None = None) -> EpochResult:
        start = time.perf_counter()
        total = torch.zeros((), device=self.device)
        for loss in self.run_epoch(data):
            total += loss
            if on_batch:
                on_batch()
        train_loss = total.item() / data.train_x.shape[0]
        return EpochResult(self.epoch, self.step, train_loss, test_elbo(self.model, self.guide, data),
                           self.estimator.beta, time.perf_counter() - start)

    def extra_metrics(self) -> dict[str, float]:
        """Scalars the pair reports through an optional ``metrics()`` method (e.g. a learned sigma)."""
        out: dict[str, float] = {}
        for part in (self.model, self.guide):
            if hasattr(part, "metrics"):
                out |= part.metrics()
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "params": {name: p.detach().clone() for name, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "shuffle": self.shuffle.get_state(),
            "rng": pyro.util.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint into a trainer whose ``setup`` has run (same pair, same config)."""
        missing = set(self.params) ^ set(state["params"])
        if missing:
            from ppvae.errors import CheckpointError

            raise CheckpointError(f"Checkpoint parameters do not match this pair: {sorted(missing)[:5]}.")
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.shuffle.set_state(state["shuffle"])
        pyro.util.set_rng_state(state["rng"])


@torch.no_grad()
def test_elbo(model: Callable, guide: Callable, data: Dataset, batch_size: int = 1000) -> float:
    """Single-sample ELBO per test point (nats): the cheap per-epoch curve."""
    total = torch.zeros((), device=data.test_x.device)
    y_all = data.test_y
    for start in range(0, data.test_x.shape[0], batch_size):
        x = data.test_x[start:start + batch_size]
        y = None if y_all is None else y_all[start:start + batch_size]
        total += iwae_bound(log_weights(model, guide, x, y, k=1)).sum()
    return total.item() / data.test_x.shape[0]


__all__ = ["Trainer", "EpochResult", "OPTIMIZERS", "resolve_device", "seed_everything", "test_elbo"]
