"""The VampPrior (Tomczak & Welling 2018): the mixture of the guide's posteriors at learned pseudo-inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.registry import Param


@registry.register("prior", "vamp", needs_guide=True)
class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z | u_k): the guide's posterior at K learned pseudo-inputs u_k (VampPrior, K = 500 in
    the paper); no closed-form KL, so meanfield uses a Monte Carlo one.

    The pseudo-inputs are parameters of the model (pixels in [0, 1], ``hardtanh`` of a raw value started at
    N(0.05, 0.01), as in the paper); the posterior belongs to the guide, whose encoder is trained by both
    terms. The pair builder hands the guide over with :meth:`attach_guide`, which also sizes the pseudo-inputs
    to the data; the prior keeps no reference to the guide's modules as its own, so their parameters are the
    guide's alone.
    """

    def __init__(self, latent_dim: int, *,
                 components: Annotated[int, Param(">= 1", "number of pseudo-inputs K")] = 500):
        super().__init__()
        self.latent_dim, self.components = latent_dim, components
        self._posterior: list[Callable] = []  # the guide's q(z | x), in a list: not a submodule of the model
        self.pseudo_inputs: nn.Parameter | None = None

    def attach_guide(self, posterior: Callable[[torch.Tensor], dist.Distribution], x_dim: int) -> None:
        """Use ``posterior`` (the guide's q(z | x)) for the components, with pseudo-inputs of ``x_dim`` pixels."""
        self._posterior[:] = [posterior]
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(self.components, x_dim))

    def pseudo_images(self) -> torch.Tensor:
        """The pseudo-inputs as images in [0, 1]."""
        return F.hardtanh(self.pseudo_inputs, 0.0, 1.0)

    def forward(self) -> dist.Distribution:
        if not self._posterior:
            raise RuntimeError("The VampPrior needs the guide's posterior: build the pair with ppvae.build_pair.")
        q = self._posterior[0](self.pseudo_images())  # batch [K], event [latent_dim]
        logits = torch.full((self.components,), -math.log(self.components), device=self.pseudo_inputs.device)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), q)
