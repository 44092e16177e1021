"""Learning-rate schedules (kind ``schedule``): the factor on ``train.lr`` in each epoch.

A schedule's ``factor(epoch)`` is a function of the epoch (0-based), so a resumed run recomputes it
and ``--resume RUN train.lr=X`` rescales the whole schedule. A schedule that reacts to the
validation bound (``plateau``) also has ``observe`` and checkpointed state. ``train.warmup_epochs``
multiplies any schedule by a linear warm-up.
"""

from __future__ import annotations

import math
from typing import Annotated

from ppvae import registry
from ppvae.registry import Param

GAMMA = Param("in (0, 1]", "factor at each decay")


class Schedule:
    """Base class: ``factor(epoch)`` multiplies ``train.lr`` during epoch ``epoch`` (0-based)."""

    def factor(self, epoch: int) -> float:
        raise NotImplementedError

    def observe(self, epoch: int, valid_bound: float) -> None:
        """The validation bound measured after ``epoch`` epochs (higher is better); most schedules ignore it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@registry.register("schedule", "constant")
class Constant(Schedule):
    """train.lr throughout."""

    def factor(self, epoch: int) -> float:
        return 1.0


@registry.register("schedule", "exponential")
class Exponential(Schedule):
    """train.lr * gamma^epoch: exponential decay, one step per epoch."""

    def __init__(self, *, gamma: Annotated[float, Param("in (0, 1]", "factor per epoch")] = 0.95):
        self.gamma = gamma

    def factor(self, epoch: int) -> float:
        return self.gamma ** epoch


@registry.register("schedule", "step")
class Step(Schedule):
    """train.lr * gamma^(epoch // every): step decay."""

    def __init__(self, *, every: Annotated[int, Param(">= 1", "epochs between decays")] = 30,
                 gamma: Annotated[float, GAMMA] = 0.1):
        self.every, self.gamma = every, gamma

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.every)


@registry.register("schedule", "multistep")
class MultiStep(Schedule):
    """train.lr * gamma^(number of milestones passed): decays at the given epochs."""

    def __init__(self, *, milestones: Annotated[tuple[int, ...], Param(">= 1", "epochs at which the rate decays",
                                                                       length=(1, None))] = (200,),
                 gamma: Annotated[float, GAMMA] = 0.1):
        self.milestones, self.gamma = tuple(sorted(milestones)), gamma

    def factor(self, epoch: int) -> float:
        return self.gamma ** sum(epoch >= m for m in self.milestones)


@registry.register("schedule", "cosine")
class Cosine(Schedule):
    """train.lr * (1 + cos(pi * epoch / epochs)) / 2: cosine annealing to 0 over ``epochs``."""

    def __init__(self, *, epochs: Annotated[int, Param(">= 1", "epochs of the half cosine")] = 100):
        self.epochs = epochs

    def factor(self, epoch: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))


@registry.register("schedule", "burda")
class Burda(Schedule):
    """Burda et al. (2015): 10^(-i/decades) for 3^i epochs, i = 0, 1, ... (train.lr = 1e-3, 3,280 epochs for i <= 7)."""

    def __init__(self, *, base: Annotated[int, Param(">= 2", "stage i lasts base^i epochs")] = 3,
                 decades: Annotated[float, Param("> 0", "stages per tenfold decay")] = 7.0):
        self.base, self.decades = base, decades

    def stage(self, epoch: int) -> int:
        """The stage i holding ``epoch``: stages 0..i-1 last (base^i - 1) / (base - 1) epochs together."""
        i, end = 0, 1
        while epoch >= end:
            i += 1
            end += self.base ** i
        return i

    def factor(self, epoch: int) -> float:
        return 10 ** (-self.stage(epoch) / self.decades)


@registry.register("schedule", "plateau")
class Plateau(Schedule):
    """train.lr times gamma each time the validation bound has not improved for ``patience`` validations."""

    def __init__(self, *, gamma: Annotated[float, GAMMA] = 0.5,
                 patience: Annotated[int, Param(">= 1", "validations without improvement before a decay")] = 10,
                 min_factor: Annotated[float, Param(">= 0", "the factor never falls below this")] = 1e-3):
        self.gamma, self.patience, self.min_factor = gamma, patience, min_factor
        self.scale, self.best, self.waited = 1.0, -math.inf, 0

    def factor(self, epoch: int) -> float:
        return self.scale

    def observe(self, epoch: int, valid_bound: float) -> None:
        if valid_bound > self.best:
            self.best, self.waited = valid_bound, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.scale, self.waited = max(self.min_factor, self.scale * self.gamma), 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.waited = state["scale"], state["best"], state["waited"]
