"""Learning-rate schedules (kind ``schedule``): the factor on ``train.lr`` at each epoch.

A schedule is a function of the position in training, so it needs no state of its own: a
resumed run recomputes it, and ``--resume RUN train.lr=X`` rescales the whole schedule.
"""

from __future__ import annotations

from typing import Annotated

from ppvae import registry
from ppvae.registry import Param


class Schedule:
    """Base class: ``factor(epoch)`` multiplies ``train.lr`` during epoch ``epoch`` (0-based)."""

    def factor(self, epoch: int) -> float:
        raise NotImplementedError


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
                 gamma: Annotated[float, Param("in (0, 1]", "factor at each decay")] = 0.1):
        self.every, self.gamma = every, gamma

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.every)
