"""Posterior families q(z|x): map encoder outputs to a distribution over z.

Each family says how many encoder outputs it reads (``outputs``) and is registered by name
in :data:`FAMILIES`. Every family here is reparameterized (Beta through torch's implicit
reparameterization), so every estimator can use it; the closed-form KLs ``meanfield`` can use
are Normal-Normal, Beta-Beta, Kumaraswamy-Beta and low-rank-Normal-Normal (the last three
registered in :mod:`ppvae.models.distributions`).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError
from ppvae.models.distributions import LogitBeta, LogitKumaraswamy

MIN_SCALE = 1e-5
MIN_CONCENTRATION = 1e-3  # floor of the Beta/Kumaraswamy concentrations
MAX_KUMARASWAMY = 100.0  # the Kumaraswamy-Beta KL series is accurate to 2e-2 nats up to here


class DiagonalNormal(nn.Module):
    """q(z|x) = N(loc, diag(scale^2)); scale through softplus, floored for stability."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = 2 * latent_dim

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "DiagonalNormal":
        return cls(cfg.model.latent_dim)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)


class PointMass(nn.Module):
    """q(z|x) = delta(encoder(x)): a deterministic code, i.e. a (MAP-regularized) autoencoder."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = latent_dim

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "PointMass":
        return cls(cfg.model.latent_dim)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Delta(out).to_event(1)


class _UnitIntervalFamily(nn.Module):
    """Shared by the code families on (0, 1), which pair with the Beta prior: like it, they sample
    and score z = logit(code) (see :mod:`ppvae.models.distributions`). Concentrations are
    ``softplus(output) + MIN_CONCENTRATION``."""

    unit_interval = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.outputs = 2 * latent_dim

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "_UnitIntervalFamily":
        if cfg.model.prior != "beta":
            raise ConfigError(f"guide.family = {cfg.guide.family!r} describes logit(code) for codes on (0, 1) and "
                              f"pairs with model.prior = 'beta' only (model.prior = {cfg.model.prior!r}).")
        return cls(cfg.model.latent_dim)

    def concentrations(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_a, raw_b = out.chunk(2, dim=-1)
        return F.softplus(raw_a) + MIN_CONCENTRATION, F.softplus(raw_b) + MIN_CONCENTRATION


class BetaFamily(_UnitIntervalFamily):
    """q(c|x) = prod_j Beta(a_j, b_j) for the code c on (0, 1) (closed-form KL to the Beta prior)."""

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return LogitBeta(*self.concentrations(out)).to_event(1)


class KumaraswamyFamily(_UnitIntervalFamily):
    """q(c|x) = prod_j Kumaraswamy(a_j, b_j): a Beta look-alike with an explicit inverse CDF.

    Its KL to the Beta prior is the Nalisnick & Smyth (2017) series, accurate for
    a <= ``MAX_KUMARASWAMY``, where the concentrations are capped.
    """

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        a, b = self.concentrations(out)
        return LogitKumaraswamy(a.clamp(max=MAX_KUMARASWAMY), b.clamp(max=MAX_KUMARASWAMY)).to_event(1)


class LowRankNormal(nn.Module):
    """q(z|x) = N(loc, D (V V^T + I) D), D = diag(d), rank-r V per point: correlated posteriors.

    With rank = latent_dim the covariance is unrestricted.

    The factor is scaled by d (W = D V) so that Pyro's capacitance matrix I + W^T D^-2 W = I + V^T V
    stays well conditioned when posterior scales are small: with an unscaled W it is
    ill-conditioned in float32 as d shrinks and its Cholesky fails (seen on MNIST).
    """

    def __init__(self, latent_dim: int, rank: int = 2):
        super().__init__()
        self.latent_dim, self.rank = latent_dim, rank
        self.outputs = latent_dim * (2 + rank)

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "LowRankNormal":
        return cls(cfg.model.latent_dim, cfg.guide.rank)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, raw, factor = out.split([d, d, d * self.rank], dim=-1)
        scale = F.softplus(raw) + MIN_SCALE
        factor = scale.unsqueeze(-1) * factor.unflatten(-1, (d, self.rank))
        return dist.LowRankMultivariateNormal(loc, factor, scale**2)


class InverseAutoregressiveFlow(nn.Module):
    """q(z|x): a diagonal Normal base pushed through conditional IAF layers (Kingma et al. 2016).

    The encoder outputs the base's loc and scale and a context vector h(x); each layer is
    Pyro's ``ConditionalAffineAutoregressive`` (a MADE network reading z and h, in the
    numerically stable gated form that starts near the identity). Sampling and scoring one's
    own draws are one pass per layer (the transforms cache their inputs); scoring other points
    inverts the layers one dimension at a time.
    """

    def __init__(self, latent_dim: int, layers: int = 2, hidden: list[int] | None = None, context: int = 32):
        super().__init__()
        self.latent_dim, self.context = latent_dim, context
        self.outputs = 2 * latent_dim + context
        hidden = list(hidden or [4 * latent_dim])
        self.flows = nn.ModuleList(
            ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(latent_dim, context, hidden), stable=True)
            for _ in range(layers))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "InverseAutoregressiveFlow":
        g = cfg.guide
        if not all(type(h) is int and h > 0 for h in g.flow_hidden):
            raise ConfigError(f"guide.flow_hidden = {g.flow_hidden!r} must be a list of positive integers.")
        return cls(cfg.model.latent_dim, g.flow_layers, g.flow_hidden, g.flow_context)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, raw, h = out.split([d, d, self.context], dim=-1)
        base = dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])


FAMILIES: dict[str, type[nn.Module]] = {
    "normal": DiagonalNormal,
    "delta": PointMass,
    "beta": BetaFamily,
    "kumaraswamy": KumaraswamyFamily,
    "lowrank": LowRankNormal,
    "flow": InverseAutoregressiveFlow,
}
