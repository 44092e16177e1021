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
    eval mode (evaluation, figures) the guide sees clean inputs. ``level`` may be changed
    between steps, which is how a decreasing noise schedule is applied.
    """

    def __init__(self, guide: Callable, level: float):
        super().__init__()
        self.guide, self.level = guide, level

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if self.training and self.level > 0:
            x = salt_and_pepper(x, self.level)
        return self.guide(x, y)
