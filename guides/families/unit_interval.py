"""Beta and Kumaraswamy codes on (0, 1), the guides of the sparse Beta prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.distributions import LogitBeta, LogitKumaraswamy

MIN_CONCENTRATION = 1e-3  # floor of the Beta/Kumaraswamy concentrations
MAX_KUMARASWAMY = 100.0  # the Kumaraswamy-Beta KL series is accurate to 2e-2 nats up to here


class _UnitIntervalFamily(nn.Module):
    """Shared by the code families on (0, 1), which pair with the Beta prior: like it, they sample
    and score z = logit(code) (see :mod:`ppvae.distributions`). Concentrations are
    ``softplus(output) + MIN_CONCENTRATION``."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = 2 * latent_dim

    def concentrations(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_a, raw_b = out.chunk(2, dim=-1)
        return F.softplus(raw_a) + MIN_CONCENTRATION, F.softplus(raw_b) + MIN_CONCENTRATION


@registry.register("family", "beta", support="unit_interval")
class BetaFamily(_UnitIntervalFamily):
    """q(c|x) = prod_j Beta(a_j, b_j) for the code c on (0, 1) (closed-form KL to the Beta prior)."""

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return LogitBeta(*self.concentrations(out)).to_event(1)


@registry.register("family", "kumaraswamy", support="unit_interval")
class KumaraswamyFamily(_UnitIntervalFamily):
    """q(c|x) = prod_j Kumaraswamy(a_j, b_j): a Beta look-alike with an explicit inverse CDF.

    Its KL to the Beta prior is the Nalisnick & Smyth (2017) series, accurate for
    a <= ``MAX_KUMARASWAMY``, where the concentrations are capped.
    """

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        a, b = self.concentrations(out)
        return LogitKumaraswamy(a.clamp(max=MAX_KUMARASWAMY), b.clamp(max=MAX_KUMARASWAMY)).to_event(1)
