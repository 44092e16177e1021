"""The activations a network part may name (``activation = "tanh"``)."""

from __future__ import annotations

from torch import nn

from ppvae import registry

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
ACTIVATION = registry.Param(doc="nonlinearity between layers", choices=tuple(ACTIVATIONS))

__all__ = ["ACTIVATIONS", "ACTIVATION"]
