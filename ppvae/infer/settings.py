"""The ``[train]`` section, apart from the trainer so that a config is read and checked without torch.

Its defaults name the ``adam`` optimizer and the ``constant`` schedule: their entries must be known
when this module is imported (``ppvae.infer.optimizers`` imported, or described by the registry's
catalog, as :mod:`ppvae.config` does first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from ppvae import registry
from ppvae.registry import Param, Part, Section, Spec


@dataclass(frozen=True)
class TrainSettings(Section):
    """The ``[train]`` section: what the trainer and the run loop read."""

    key: ClassVar[str] = "train"

    optimizer: Annotated[Spec, Part("optimizer")] = registry.spec("optimizer", "adam", "train.optimizer")
    lr: Annotated[float, Param("> 0", "learning rate (the schedule multiplies it)")] = 1e-3
    weight_decay: Annotated[float, Param(">= 0", "L2 penalty (the optimizer's weight_decay)")] = 0.0
    schedule: Annotated[Spec, Part("schedule")] = registry.spec("schedule", "constant", "train.schedule")
    warmup_epochs: Annotated[int, Param(">= 0", "linear warm-up of the learning rate over this many epochs")] = 0
    clip_grad_norm: Annotated[float, Param(">= 0", "clip the gradient's total norm to this (0: no clipping)")] = 0.0
    batch_size: Annotated[int, Param(">= 1")] = 100
    epochs: Annotated[int, Param(">= 1", "epochs at most (early stopping may end sooner)")] = 10
    validate_every: Annotated[int, Param(">= 1", "epochs between validation bounds (with data.validation)")] = 1
    validation_k: Annotated[int, Param(">= 1", "importance samples of the validation bound (1: the ELBO)")] = 1
    patience: Annotated[int, Param(">= 0", "early stopping: stop after this many validations without a better "
                                           "bound (0: never)")] = 0
    seed: Annotated[int, Param("in [0, 4294967295]", "seed of initialization, shuffling and sampling")] = 0
    device: Annotated[str, Param(doc="auto: CUDA when present", choices=("auto", "cpu", "cuda"))] = "auto"


__all__ = ["TrainSettings"]
