"""Networks whose weights are latent variables: Bayesian linear layers and the MLP made of them.

Each weight and bias is a ``PyroSample`` attribute with a Gaussian or scale-mixture prior
(:class:`WeightPrior`); a :class:`WeightLink` lets the network read the moments of its weight
posterior (held by the guide) for the local reparameterization trick, without owning it. The
model and guide that use them are :mod:`ppvae.models.bayesian` and :mod:`ppvae.guides.bayesian`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroSample
from torch import nn

from ppvae.nn.activations import ACTIVATIONS
from ppvae.sites import plate_shape


class WeightLink:
    """What the Bayesian decoder reads from its weight guide, without owning its parameters.

    The guide records each weight draw here; the model asks for the Normal moments of a
    weight tensor (local reparameterization, only if it *is* the guide's latest draw) and
    for the posterior means (to decode when it runs on its own).
    """

    def __init__(self) -> None:
        self.posterior: nn.Module | None = None  # set by the guide's WeightPosterior
        self._draws: dict[str, torch.Tensor] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        self._draws[name] = value

    def moments(self, name: str, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.posterior is None or self._draws.get(name) is not value:
            return None
        return self.posterior.loc(name), self.posterior.scale(name)

    def means(self) -> dict[str, torch.Tensor]:
        """Posterior means of every weight site, broadcast over the enclosing vectorized plates."""
        if self.posterior is None:
            return {}
        shape = plate_shape()
        return {name: self.posterior.loc(name).expand(shape + self.posterior.loc(name).shape)
                for name in self.posterior.names}


class WeightPrior(nn.Module):
    """p(w) per weight: N(0, s^2), or the scale mixture pi N(0, s^2) + (1 - pi) N(0, s_narrow^2)
    of Blundell et al. (2015), whose narrow component lets many weights sit near zero."""

    def __init__(self, kind: str = "normal", scale: float = 1.0, narrow: float = 0.0025, mix: float = 0.5):
        super().__init__()
        self.kind = kind
        scales = [scale] if kind == "normal" else [scale, narrow]
        self.register_buffer("scales", torch.tensor(scales))
        self.register_buffer("logits", torch.tensor([mix, 1 - mix]).log())

    def forward(self, shape: tuple[int, ...]) -> dist.Distribution:
        if self.kind == "normal":
            base = dist.Normal(torch.zeros_like(self.scales[0]), self.scales[0])
        else:
            base = dist.MixtureSameFamily(dist.Categorical(logits=self.logits),
                                          dist.Normal(torch.zeros_like(self.scales), self.scales))
        return base.expand(torch.Size(shape)).to_event(len(shape))


class BayesianLinear(PyroModule):
    """A linear layer whose weight ``[out, in]`` and bias ``[out]`` are ``PyroSample`` latent sites."""

    def __init__(self, in_features: int, out_features: int, prior: WeightPrior, link: WeightLink,
                 local_reparam: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.prior, self.link, self.local_reparam = prior, link, local_reparam
        self.weight = PyroSample(lambda self: self.prior((self.out_features, self.in_features)))
        self.bias = PyroSample(lambda self: self.prior((self.out_features,)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if self.local_reparam:
            qw = self.link.moments(self._pyro_get_fullname("weight"), w)
            qb = self.link.moments(self._pyro_get_fullname("bias"), b)
            if qw is not None and qb is not None:
                mean = F.linear(h, qw[0], qb[0])
                var = F.linear(h * h, qw[1] ** 2, qb[1] ** 2)
                return mean + var.sqrt() * torch.randn_like(mean)
        if w.dim() == 2:
            return F.linear(h, w, b)
        # one draw per vectorized particle: w is [*particles, 1, out, in] (the 1 is the data plate)
        return torch.matmul(h, w.squeeze(-3).transpose(-1, -2)) + b


class BayesianMLP(PyroModule[nn.Sequential]):
    """The MLP of :class:`ppvae.nn.mlp.MLP` with Bayesian linear layers (same layer indices, so
    a point-estimate decoder's ``decoder.{i}.weight`` maps onto site ``decoder.{i}.weight``)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str, prior: WeightPrior,
                 link: WeightLink, local_reparam: bool = True):
        layers: list[nn.Module] = []
        for width in [*hidden, out_dim]:
            layers.append(BayesianLinear(in_dim, width, prior, link, local_reparam))
            layers.append(ACTIVATIONS[activation]())
            in_dim = width
        super().__init__(*layers[:-1])
        self.link = link

    def site_shapes(self, prefix: str = "decoder") -> dict[str, torch.Size]:
        """Weight site name -> shape, as the model names them when the decoder is attribute ``prefix``."""
        shapes = {}
        for i, layer in enumerate(self):
            if isinstance(layer, BayesianLinear):
                shapes[f"{prefix}.{i}.weight"] = torch.Size((layer.out_features, layer.in_features))
                shapes[f"{prefix}.{i}.bias"] = torch.Size((layer.out_features,))
        return shapes

    def draw(self) -> None:
        """Sample every weight once for this call; later reads in the same call reuse the draw."""
        for layer in self:
            if isinstance(layer, BayesianLinear):
                _ = layer.weight, layer.bias


__all__ = ["WeightLink", "WeightPrior", "BayesianLinear", "BayesianMLP"]
