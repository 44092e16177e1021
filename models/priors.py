"""Priors p(z): modules returning a distribution with event shape ``[latent_dim]``.

Constants are buffers and learned quantities parameters, so a prior follows the model's
device and a learned prior trains with the decoder (the model registers it with
``pyro.module``). A prior whose latent values are not what the decoder should read has a
``decoder_input`` module that the pair builder puts in front of the decoder. Only :class:`StandardNormal` and :class:`SparseBeta` (with a Beta guide)
have a closed-form KL against the bundled guides; with the mixtures ``meanfield`` falls back
to a Monte Carlo KL, says so in the log and in ``metrics.json``, and refuses with ``strict``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError

from .distributions import LogitBeta


class StandardNormal(nn.Module):
    """p(z) = N(0, I). Buffers (not parameters) so the prior follows the model's device."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "StandardNormal":
        return cls(cfg.model.latent_dim)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class SigmoidCode(nn.Module):
    """Maps the first ``latent_dim`` inputs through a sigmoid (logit coordinates to codes on (0, 1));
    inputs after them (a conditional pair's one-hot label) pass unchanged."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(h[..., :self.latent_dim]), h[..., self.latent_dim:]], dim=-1)


class SparseBeta(nn.Module):
    """p(c) = prod_j Beta(a, b) for codes c on (0, 1); with a, b < 1 the mass sits near 0 and 1.

    The latent site holds z = logit(c), where Beta densities and draws are exact in float32
    (see :mod:`ppvae.models.distributions`); the decoder reads c = sigmoid(z) through
    ``decoder_input``. Needs a guide in the same coordinates (``beta`` or ``kumaraswamy``).
    """

    def __init__(self, latent_dim: int, a: float = 0.2, b: float = 0.2):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("a", torch.full((latent_dim,), float(a)))
        self.register_buffer("b", torch.full((latent_dim,), float(b)))
        self.decoder_input = SigmoidCode(latent_dim)

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "SparseBeta":
        from ppvae.guides import FAMILIES

        family = cfg.guide.family
        if not getattr(FAMILIES.get(family), "unit_interval", False):
            on_unit = [name for name, f in FAMILIES.items() if getattr(f, "unit_interval", False)]
            raise ConfigError(f"model.prior = 'beta' lives on (0, 1), but guide.family = {family!r} puts mass "
                              f"outside it. Use guide.family = {' or '.join(map(repr, on_unit))}.")
        return cls(cfg.model.latent_dim, cfg.model.prior_a, cfg.model.prior_b)

    def forward(self) -> dist.Distribution:
        return LogitBeta(self.a, self.b).to_event(1)


class ZeroOneMixture(nn.Module):
    """p(z_j) = 1/2 N(0, s^2) + 1/2 N(1, s^2) per dimension: a smooth prior for binary codes (s small)."""

    def __init__(self, latent_dim: int, scale: float = 0.1):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("locs", torch.tensor([0.0, 1.0]).expand(latent_dim, 2).clone())
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("logits", torch.zeros(latent_dim, 2))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "ZeroOneMixture":
        return cls(cfg.model.latent_dim, cfg.model.prior_scale)

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, self.scale)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components).to_event(1)


class GaussianMixture(nn.Module):
    """Learned p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)) with K components, trained with the decoder.

    A learned mixture rather than a VampPrior (Tomczak & Welling 2018): the VampPrior's
    components are q(z | u_k) for learned pseudo-inputs u_k, which would make the model call
    the guide's encoder, and here model and guide are separate, swappable parts.
    """

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__()
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, latent_dim))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianMixture":
        return cls(cfg.model.latent_dim, cfg.model.prior_components)

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


PRIORS: dict[str, type[nn.Module]] = {
    "normal": StandardNormal,
    "beta": SparseBeta,
    "mixture01": ZeroOneMixture,
    "mixture": GaussianMixture,
}

__all__ = ["SigmoidCode", "StandardNormal", "SparseBeta", "ZeroOneMixture", "GaussianMixture", "PRIORS"]
