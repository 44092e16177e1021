"""Laplace pixels: an L1 reconstruction term, robust to outlying pixels."""

from __future__ import annotations

import math
from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry
from ppvae.registry import Param


@registry.register("likelihood", "laplace")
class Laplace(nn.Module):
    """Laplace pixels, mean from the decoder, one global scale b (learned or fixed): -log p = |x - mu| / b + log 2b."""

    outputs_per_pixel = 1

    def __init__(self, *, scale: Annotated[float, Param("> 0", "the scale b, or its initial value when learned")] = 0.1,
                 learned: Annotated[bool, Param(doc="learn log b by gradient")] = True):
        super().__init__()
        log_scale = torch.tensor(math.log(scale))
        if learned:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Laplace(out, self.scale).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out
