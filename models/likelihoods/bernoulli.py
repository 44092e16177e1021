"""Bernoulli pixels: the likelihood for binarized images."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry


@registry.register("likelihood", "bernoulli", binary_data=True)
class Bernoulli(nn.Module):
    """Bernoulli pixels with logits from the decoder; needs binary data (set data.binarize)."""

    outputs_per_pixel = 1

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)
