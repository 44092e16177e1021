"""Gaussian-mixture priors: fixed components at 0 and 1, or a learned mixture."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import registry
from ppvae.registry import Param


@registry.register("prior", "mixture01")
class ZeroOneMixture(nn.Module):
    """p(z_j) = 1/2 N(0, s^2) + 1/2 N(1, s^2) per dimension: a smooth prior for binary codes (s small)."""

    def __init__(self, latent_dim: int, *, scale: Annotated[float, Param("> 0", "sd s of the components")] = 0.1):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("locs", torch.tensor([0.0, 1.0]).expand(latent_dim, 2).clone())
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("logits", torch.zeros(latent_dim, 2))

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, self.scale)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components).to_event(1)


@registry.register("prior", "mixture")
class GaussianMixture(nn.Module):
    """Learned p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)), trained with the decoder.

    Its components are free Gaussians in z, independent of the guide. The VampPrior (``vamp``)
    is the other learned mixture: its components are the guide's q(z | u_k) at learned
    pseudo-inputs u_k, so it ties the prior to the encoder.
    """

    def __init__(self, latent_dim: int, *,
                 components: Annotated[int, Param(">= 1", "number of learned Gaussian components")] = 10):
        super().__init__()
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, latent_dim))

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)
