"""Networks shared by encoders (guides/) and decoders (models/)."""

from __future__ import annotations

import torch
from torch import nn

from ppvae.config import NetworkConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Sequential):
    """Fully connected network ``in -> hidden... -> out``; no hidden layers gives a linear map."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, activation: str = "relu"):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), ACTIVATIONS[activation]()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


def make_network(cfg: NetworkConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The network a ``NetworkConfig`` describes, mapping ``[..., in_dim] -> [..., out_dim]``."""
    return MLP(in_dim, list(cfg.hidden), out_dim, cfg.activation)


def split_last(t: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """Split the last dimension into ``parts`` equal chunks (e.g. loc and scale heads)."""
    return tuple(t.chunk(parts, dim=-1))
