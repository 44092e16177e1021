"""The denoising bound (Im et al. 2017): the guide sees corrupted inputs, the model scores clean ones."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def salt_and_pepper(x: torch.Tensor, level: float) -> torch.Tensor:
    """Set each pixel, with probability ``level``, to 0 or 1 (equally likely)."""
    hit = torch.rand_like(x) < level
    return torch.where(hit, torch.bernoulli(torch.full_like(x, 0.5)), x)


class DenoisingGuide(nn.Module):
    """Wrap a guide so that, in training mode, it encodes ``x`` corrupted by salt-and-pepper noise.

    The wrapped pair optimizes the denoising variational bound E_{p(x~|x)} ELBO(q(z|x~)); in
    eval mode (evaluation, figures) the guide sees clean inputs. With ``end`` and ``epochs``
    the level falls linearly from ``level`` in the first epoch to ``end`` in the last (the
    trainer's ``on_epoch_end`` hook moves it; it is checkpointed as the module's extra state).
    """

    def __init__(self, guide: Callable, level: float, end: float | None = None, epochs: int = 1):
        super().__init__()
        self.guide, self.start, self.epochs = guide, level, epochs
        self.end = level if end is None else end
        self.level = level

    def on_epoch_end(self, epoch: int) -> None:
        """Set the level for the next epoch (``epoch`` epochs are done)."""
        self.level = self.start + (self.end - self.start) * min(1.0, epoch / max(1, self.epochs - 1))

    def get_extra_state(self) -> dict:
        return {"level": self.level}

    def set_extra_state(self, state: dict) -> None:
        self.level = state["level"]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if self.training and self.level > 0:
            x = salt_and_pepper(x, self.level)
        return self.guide(x, y)
