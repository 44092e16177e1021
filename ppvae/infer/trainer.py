"""Training: torch.optim steps on an estimator's loss, for any model/guide pair.

Parameters are collected the Pyro way (a ``param_only`` trace of one loss evaluation), so
pairs built from ``pyro.module``, ``PyroModule`` or plain ``pyro.param`` all train the same.
Losses are summed on the device, and the first step with a non-finite loss or gradient is
recorded on the device too; the host reads that record every ``check_every`` steps and at
each epoch end, so there is no host sync per step.

A model or guide may define training hooks: ``after_step(model, guide, x, y)``, called after
every optimizer step without gradients (e.g. a closed-form parameter update), and
``on_epoch_end(epoch)``. Their buffers and extra state (a closed-form sigma, a training
stage, batch-norm statistics) are checkpointed beside the parameters.

The trainer's position is exact to the batch: ``state_dict`` holds parameters, optimizer,
every random state and the place inside the current epoch, so a run stopped between two
steps (Ctrl-C, SIGTERM) resumes to the same numbers as a run that never stopped.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae.data import Dataset
from ppvae.errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    PairError,
    PPVAEError,
    TrainingError,
    one_line,
    reported_as,
)
from ppvae.infer import distributed, optimizers, schedules  # noqa: F401  (registers the parts TrainSettings defaults to)
from ppvae.infer.contract import check_pair
from ppvae.infer.estimators import Estimator
from ppvae.infer.importance import ELEMENT_BUDGET, iwae_bound, log_weights
from ppvae.infer.settings import TrainSettings
from ppvae.nn import eval_mode, kept_buffers
from ppvae.rng import own_stream


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    pyro.set_rng_seed(seed)  # python, numpy and torch


def get_rng_state(device: torch.device) -> dict:
    """Every random state a run draws from, as tensors and plain values (checkpoints load with weights_only)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "random": random.getstate(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["random"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))


@dataclass
class EpochResult:
    epoch: int
    step: int
    train_loss: float  # -objective per data point, averaged over the epoch
    test_elbo: float
    beta: float
    lr: float
    seconds: float
    valid_bound: float | None = None  # the validation bound, in the epochs that measure it
    best: bool = False  # the best validation bound so far (its parameters are the run's best checkpoint)


@dataclass
class Validation:
    """Early stopping's record: the best validation bound, its epoch, validations since, and whether to stop."""

    best: float = -math.inf
    best_epoch: int = 0
    waited: int = 0
    stopped: bool = False


class Trainer:
    """Fits a model/guide pair with an estimator; owns the optimizer and the position in training.

    Pyro keeps parameters in one global store, so a Trainer clears it on creation: train
    one pair per process at a time (as Pyro's own SVI does).
    """

    check_every = 50  # steps between reads of the device-side finiteness record (one host sync each)

    def __init__(self, model: Callable, guide: Callable, estimator: Estimator, cfg: TrainSettings = TrainSettings(),
                 device: torch.device | str = "cpu", group: distributed.Group | None = None):
        self.model, self.guide, self.estimator, self.cfg = model, guide, estimator, cfg
        self.group = group  # the ranks of a data-parallel run (ppvae.infer.distributed); None: this process alone
        self.schedule = cfg.schedule.create()
        self.device = torch.device(device)
        for part in (model, guide):
            if isinstance(part, torch.nn.Module):
                part.to(self.device)
        self.params: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.batch = 0  # batches done in the current epoch: non-zero only in a run stopped mid-epoch
        self.validation = Validation()
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.epoch_order = self.shuffle.get_state()  # shuffle state this epoch's order is drawn from
        self.epoch_loss = torch.zeros((), device=self.device)
        self.epoch_seconds = 0.0
        self.stop_signal: int | None = None  # set by a signal handler: stop after the current step
        self._agreed_stop: int | None = None  # data-parallel: a stop every rank has seen, after the same step
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._bad_loss = torch.zeros((), device=self.device)
        pyro.clear_param_store()

    # ------------------------------------------------------------------ set-up

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Check the pair on one batch, materialize parameters, build the optimizer.

        Every way a pair can fail on its first batch surfaces here, before any step, as one
        clear error instead of a traceback from inside Pyro or PyTorch.
        """
        check_pair(self.model, self.guide, x, y)
        with reported_as(f"The {self.estimator.name} estimator failed on the pair's first batch"):
            self.estimator.check(self.model, self.guide, x, y)
            with poutine.trace(param_only=True) as capture:
                loss = float(self.estimator(self.model, self.guide, x, y).loss)
        if not math.isfinite(loss):
            raise PairError(
                f"The loss is {loss} on the first batch, before any training step: the model gives the data "
                "zero or undefined probability. Usual causes: data outside [0, 1] (or not binary, for a Bernoulli "
                "likelihood), a fixed sigma far too small for the data, or a network output that overflows.")
        self.params = {name: site["value"].unconstrained() for name, site in sorted(capture.trace.nodes.items())}
        if not self.params:
            raise PairError("The pair has no parameters to train: register its networks with pyro.module "
                            "(or use PyroModule / pyro.param).")
        self.optimizer = self.cfg.optimizer.create(list(self.params.values()), self.cfg.lr, self.cfg.weight_decay)
        if self.group:
            self.group.broadcast_(list(self.params.values()))  # every rank starts from rank 0's parameters

    # ------------------------------------------------------------------ steps

    @property
    def lr(self) -> float:
        """The learning rate of the current epoch: ``train.lr`` times the schedule's factor and the warm-up."""
        warmup = min(1.0, (self.epoch + 1) / self.cfg.warmup_epochs) if self.cfg.warmup_epochs else 1.0
        return self.cfg.lr * self.schedule.factor(self.epoch) * warmup

    def train_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step; returns the batch's summed loss as a device tensor."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.group is None:
            loss = self.estimator.backward(self.model, self.guide, x, y, scale=1.0 / x.shape[0])
        else:
            loss = self._data_parallel_backward(x, y)
        self._record_finite(loss)
        if self.cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.clip_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            if self.group:  # on the global batch, from a stream all ranks share: the same update everywhere
                torch.manual_seed(distributed.step_seed(self.cfg.seed, self.step, distributed.SHARED))
            self._hook("after_step", self.model, self.guide, x, y)
        self.step += 1
        return loss

    def _data_parallel_backward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """This rank's slice of the global batch, its gradient of ``loss / global batch size``, summed over
        the ranks with the losses and the stop requests in one all-reduce; returns the global batch's loss."""
        group = self.group
        torch.manual_seed(distributed.step_seed(self.cfg.seed, self.step, group.rank))
        xs, ys = group.slice(x), group.slice(y)
        params = list(self.params.values())
        if xs.shape[0]:
            loss = self.estimator.backward(self.model, self.guide, xs, ys, scale=1.0 / x.shape[0])
        else:  # a last batch smaller than the number of ranks
            loss = torch.zeros((), device=self.device)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        stop = torch.tensor([float(self.stop_signal or 0)], device=self.device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0]), stop.to(grads[0])])
        group.sum_(flat)
        for p, part in zip(params, torch.split(flat[:-2], [p.numel() for p in params])):
            p.grad = part.view_as(p)
        if flat[-1].item() > 0:  # some rank was asked to stop: all stop after this step
            self._agreed_stop = self.stop_signal or signal.SIGTERM
        return flat[-2]

    @torch.no_grad()
    def before_evaluation(self, data: Dataset) -> None:
        """The pair's ``before_evaluation`` hooks over the training set (e.g. a closed-form sigma fitted to
        all of it), from a random stream of their own (``train.seed``): the same parameters evaluate the same."""
        with own_stream(self.device, self.cfg.seed):
            self._hook("before_evaluation", self.model, self.guide, data.batches(1000, shuffle=False))

    def _hook(self, name: str, *args) -> None:
        """Call the optional training hook ``name`` of the model and of the guide."""
        for part in (self.model, self.guide):
            hook = getattr(part, name, None)
            if callable(hook):
                hook(*args)

    def _record_finite(self, loss: torch.Tensor) -> None:
        """Remember on the device the first step whose loss or gradient is NaN or infinite.

        One NaN or inf anywhere makes the sum of loss and gradients non-finite; a finite sum
        overflows only for gradients beyond ~1e33, which have diverged anyway.
        """
        sums = [p.grad.sum() for p in self.params.values() if p.grad is not None]
        total = loss + torch.stack(sums).sum() if sums else loss
        first = (self._bad_step < 0) & ~torch.isfinite(total)
        self._bad_step = torch.where(first, self.step, self._bad_step)
        self._bad_loss = torch.where(first, loss.to(self._bad_loss), self._bad_loss)

    def check_finite(self) -> None:
        """Raise TrainingError if any step so far had a non-finite loss or gradient (one host sync)."""
        bad = int(self._bad_step)
        if bad < 0:
            return
        loss = float(self._bad_loss)
        what = (f"the loss was {loss}" if not math.isfinite(loss)
                else f"the loss was finite ({loss:.4g}) but a gradient was NaN or infinite")
        lr = self.cfg.lr
        raise TrainingError(
            f"Training diverged at epoch {self.epoch + 1}, step {bad + 1} (batch {bad - (self.step - self.batch) + 1} "
            f"of the epoch): {what}. Usual causes: a learning rate too high (train.lr = {lr:g}; try {lr / 10:g}), "
            "a learned Gaussian sigma collapsing towards 0 (raise model.sigma or use likelihood 'gaussian_fixed'), "
            "or data outside [0, 1].")

    def raise_if_stopped(self) -> None:
        """Raise Interrupted if a stop was requested; the state is then consistent for ``state_dict``."""
        signum = self.stop_signal if self.group is None else self._agreed_stop
        if signum is None:
            return
        self.check_finite()  # never hand a diverged state over to be saved
        raise Interrupted(f"Stopped by {signal.Signals(signum).name} at epoch {self.epoch + 1}, "
                          f"step {self.step} (batch {self.batch} of the epoch).", signum)

    def run_epoch(self, data: Dataset) -> Iterator[torch.Tensor]:
        """Train one epoch, or its rest after a mid-epoch resume; yields each batch's loss.

        Between steps it honours ``stop_signal`` (raising Interrupted) and every
        ``check_every`` steps and at the end it reads the finiteness record.
        """
        steps_per_epoch = -(-data.num_train // self.cfg.batch_size)
        if self.batch == 0:
            self.epoch_order = self.shuffle.get_state()
            self.epoch_loss = torch.zeros((), device=self.device)
            self.epoch_seconds = 0.0
        else:
            self.shuffle.set_state(self.epoch_order)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        batches = data.batches(self.cfg.batch_size, self.shuffle)
        if self.batch:  # replay this epoch's order up to the stop; the draws of skipped batches must not count
            rng = get_rng_state(self.device)
            collections.deque(itertools.islice(batches, self.batch), maxlen=0)
            set_rng_state(rng, self.device)
        for x, y in batches:
            self.estimator.beta = self.estimator.beta_at(self.step, steps_per_epoch)
            try:
                loss = self.train_step(x, y)
            except PPVAEError:
                raise
            except Exception as e:
                self.check_finite()  # a NaN a few steps back is the usual reason a later step fails
                raise TrainingError(
                    f"The pair failed at epoch {self.epoch + 1}, step {self.step + 1}, on a batch of {x.shape[0]} "
                    f"images: {one_line(e)}. If only some batches fail, look for a hard-coded batch size or "
                    "data-dependent shapes in the pair.") from e
            self.epoch_loss += loss
            self.batch += 1
            if self.step % self.check_every == 0:
                self.check_finite()
            yield loss
            self.raise_if_stopped()
        self.check_finite()
        self.epoch += 1
        self.batch = 0
        if self.group:  # batch-norm statistics of rank 0 everywhere, so evaluation-mode numbers agree
            self.group.broadcast_([b for part in (self.model, self.guide) if isinstance(part, torch.nn.Module)
                                   for b in part.buffers()])
        self._hook("on_epoch_end", self.epoch)

    def fit_epoch(self, data: Dataset, on_batch: Callable[[], None] | None = None) -> EpochResult:
        """Train one epoch (see ``run_epoch``), score the test set and, in the epochs that validate, the
        validation set (the schedule and early stopping read it)."""
        start, lr = time.perf_counter(), self.lr
        try:
            for _ in self.run_epoch(data):
                if on_batch:
                    on_batch()
            train_loss = self.epoch_loss.item() / data.num_train
            elbo = test_elbo(self.model, self.guide, data)
            valid = best = None
            if data.valid_x is not None and self.epoch % self.cfg.validate_every == 0:
                # scored as evaluation scores these parameters (a closed-form sigma fitted to the whole
                # training set, not the last minibatch's), then the training state is given back
                with kept_buffers(self.model, self.guide), eval_mode(self.model, self.guide):
                    self.before_evaluation(data)
                    valid = validation_bound(self.model, self.guide, data, self.cfg.validation_k,
                                             (self.cfg.seed, self.epoch))
                best = self._observe(valid)
        finally:
            self.epoch_seconds += time.perf_counter() - start
        return EpochResult(self.epoch, self.step, train_loss, elbo, self.estimator.beta, lr, self.epoch_seconds,
                           valid, bool(best))

    def _observe(self, valid: float) -> bool:
        """Record a validation bound for the schedule and early stopping; whether it is the best so far."""
        self.schedule.observe(self.epoch, valid)
        v = self.validation
        best = valid > v.best
        if best:
            v.best, v.best_epoch, v.waited = valid, self.epoch, 0
        else:
            v.waited += 1
        v.stopped = bool(self.cfg.patience) and v.waited >= self.cfg.patience
        return best

    def extra_metrics(self) -> dict[str, float]:
        """Scalars the pair reports through an optional ``metrics()`` method (e.g. a learned sigma)."""
        out: dict[str, float] = {}
        for part in (self.model, self.guide):
            if hasattr(part, "metrics"):
                out |= part.metrics()
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything needed to continue exactly from here, between two steps."""
        return {
            "params": {name: p.detach().clone() for name, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "shuffle": self.epoch_order if self.batch else self.shuffle.get_state(),
            "epoch_loss": self.epoch_loss.detach().clone(),
            "epoch_seconds": self.epoch_seconds,
            "rng": get_rng_state(self.device),
            "modules": self._module_state(),
            "validation": dataclasses.asdict(self.validation),
            "schedule": self.schedule.state_dict(),
        }

    def _module_state(self) -> dict[str, dict]:
        """Buffers and extra state of the model and guide modules: the param store holds only parameters."""
        out = {}
        for key, part in (("model", self.model), ("guide", self.guide)):
            if isinstance(part, torch.nn.Module):
                params = {name for name, _ in part.named_parameters()}
                out[key] = {k: v.detach().clone() if torch.is_tensor(v) else v
                            for k, v in part.state_dict().items() if k not in params}
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint into a trainer whose ``setup`` has run (same pair, same config).

        Learning rate and weight decay come from this trainer's config, so a run resumed
        after a divergence can lower them.
        """
        keys = ("params", "optimizer", "epoch", "step", "batch", "shuffle", "epoch_loss", "epoch_seconds", "rng")
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"The checkpoint lacks {', '.join(missing)}: it was not written by this version "
                                  "of ppvae. Start the run again.")
        self.load_weights(state)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"The checkpoint's optimizer state does not fit this run ({one_line(e)}).") from None
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.epoch, self.step, self.batch = state["epoch"], state["step"], state["batch"]
        self.shuffle.set_state(state["shuffle"])
        self.epoch_order = state["shuffle"]
        self.epoch_loss = state["epoch_loss"].to(self.device)
        self.epoch_seconds = state["epoch_seconds"]
        set_rng_state(state["rng"], self.device)
        self.validation = Validation(**state.get("validation", {}))
        if state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"])

    def load_weights(self, state: dict) -> None:
        """The parameters and module state (buffers, extra state) of a checkpoint, and nothing of its position:
        what evaluating a run's best checkpoint needs."""
        mine, theirs = set(self.params), set(state["params"])
        if mine != theirs:
            raise CheckpointError(
                f"The checkpoint's parameters do not match this pair (only in the checkpoint: {sorted(theirs - mine)[:3]}; "
                f"only in the pair: {sorted(mine - theirs)[:3]}). The run's config or pair changed after it was saved.")
        for name, value in state["params"].items():
            if value.shape != self.params[name].shape:
                raise CheckpointError(
                    f"The checkpoint's parameter {name!r} has shape {list(value.shape)} but this pair's has "
                    f"{list(self.params[name].shape)}. The run's config or pair changed after it was saved.")
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
        for key, part in (("model", self.model), ("guide", self.guide)):
            if key in state.get("modules", {}):
                part.load_state_dict(state["modules"][key], strict=False)


@contextlib.contextmanager
def _handling_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM go to ``handler`` inside the block. Signals reach only the main thread,
    so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def stop_on_signals(trainer: Trainer) -> contextlib.AbstractContextManager[None]:
    """While training, Ctrl-C and SIGTERM ask ``trainer`` to stop after the current step.

    Stopping between steps keeps the state consistent, so it can be saved and resumed
    exactly; a second Ctrl-C stops at once.
    """
    def request_stop(signum: int, frame: object) -> None:
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum

    return _handling_signals(request_stop)


@contextlib.contextmanager
def noting_signals() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM are noted in the list this yields, for a loop that stops at its next check
    (one that waits in C code, as Ray's driver does, must not be interrupted inside it)."""
    noted: list[int] = []
    with _handling_signals(lambda signum, frame: noted.append(signum)):
        yield noted


def interrupt_on_signals() -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM raise :class:`Interrupted` at once: for work with nothing to save half-way
    (an evaluation), which is simply run again."""
    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(f"Stopped by {signal.Signals(signum).name}.", signum)

    return _handling_signals(interrupt)


@torch.no_grad()
def test_elbo(model: Callable, guide: Callable, data: Dataset, batch_size: int = 1000) -> float:
    """Single-sample ELBO per test point (nats), in evaluation mode: the cheap per-epoch curve."""
    total = torch.zeros((), device=data.test_x.device)
    y_all = data.test_y
    with eval_mode(model, guide):
        for start in range(0, data.test_x.shape[0], batch_size):
            x = data.test_x[start:start + batch_size]
            y = None if y_all is None else y_all[start:start + batch_size]
            total += iwae_bound(log_weights(model, guide, x, y, k=1)).sum()
    return total.item() / data.test_x.shape[0]


@torch.no_grad()
def validation_bound(model: Callable, guide: Callable, data: Dataset, k: int, seed: tuple[int, ...]) -> float:
    """IWAE_k per validation point (k = 1: the ELBO), nats, in evaluation mode, from its own random stream
    (``seed``), so measuring it changes nothing of training."""
    x_all, y_all = data.valid_x, data.valid_y
    rows = max(1, ELEMENT_BUDGET // (k * max(1, x_all.shape[1])))
    total = torch.zeros((), device=x_all.device)
    stream = int(np.random.SeedSequence(list(seed)).generate_state(1, dtype=np.uint64)[0] >> 1)
    with eval_mode(model, guide), own_stream(x_all.device, stream):
        for start in range(0, x_all.shape[0], rows):
            y = None if y_all is None else y_all[start:start + rows]
            total += iwae_bound(log_weights(model, guide, x_all[start:start + rows], y, k=k)).sum()
    return total.item() / x_all.shape[0]


__all__ = ["TrainSettings", "Trainer", "EpochResult", "Validation", "validation_bound", "resolve_device",
           "seed_everything", "test_elbo", "get_rng_state", "set_rng_state", "stop_on_signals"]
