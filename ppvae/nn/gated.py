"""Gated fully connected networks (Dauphin et al. 2017), the VampPrior paper's encoder and decoder."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ppvae import registry
from ppvae.nn.mlp import HIDDEN


class GatedLayer(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): a linear map with a learned per-unit gate, and no other activation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.value, self.gate = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


@registry.register("network", "gated")
def gated(in_dim: int, out_dim: int, image_shape: tuple[int, ...] | None = None, role: str = "encoder", *,
          hidden: Annotated[tuple[int, ...], HIDDEN] = (300, 300)) -> nn.Sequential:
    """Gated layers of the given widths, then a linear output (Tomczak & Welling 2018: 300-300)."""
    widths = (in_dim, *hidden)
    layers = [GatedLayer(a, b) for a, b in zip(widths, widths[1:])]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out_dim))
