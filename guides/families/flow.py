"""A normalizing-flow posterior: inverse autoregressive flow layers on a diagonal Normal."""

from __future__ import annotations

from typing import Annotated

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ppvae import registry
from ppvae.distributions import MIN_SCALE
from ppvae.registry import Param


@registry.register("family", "flow")
class InverseAutoregressiveFlow(nn.Module):
    """q(z|x): a diagonal Normal pushed through conditional IAF layers (Kingma et al. 2016).

    The encoder outputs the base's loc and scale and a context vector h(x); each layer is
    Pyro's ``ConditionalAffineAutoregressive`` (a MADE network reading z and h, in the
    numerically stable gated form that starts near the identity). Sampling and scoring one's
    own draws are one pass per layer (the transforms cache their inputs); scoring other points
    inverts the layers one dimension at a time.
    """

    def __init__(self, latent_dim: int, *,
                 layers: Annotated[int, Param(">= 1", "number of IAF layers")] = 2,
                 hidden: Annotated[tuple[int, ...], Param("> 0", "hidden widths of each layer's MADE network "
                                                                 "([]: 4 x latent_dim)")] = (),
                 context: Annotated[int, Param(">= 1", "size of the context h(x) the encoder passes to the "
                                                       "layers")] = 32):
        super().__init__()
        self.latent_dim, self.context = latent_dim, context
        self.outputs = 2 * latent_dim + context
        hidden = list(hidden or [4 * latent_dim])
        self.flows = nn.ModuleList(
            ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(latent_dim, context, hidden), stable=True)
            for _ in range(layers))

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, raw, h = out.split([d, d, self.context], dim=-1)
        base = dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])
