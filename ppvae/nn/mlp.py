"""Fully connected networks."""

from __future__ import annotations

from typing import Annotated

from torch import nn

from ppvae import registry
from ppvae.nn.activations import ACTIVATION, ACTIVATIONS

HIDDEN = registry.Param("> 0", "hidden widths, 0 to 4 layers ([] is a linear map)", length=(0, 4))


class MLP(nn.Sequential):
    """Fully connected network ``in -> hidden... -> out``; no hidden layers gives a linear map."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "relu"):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), ACTIVATIONS[activation]()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


@registry.register("network", "mlp")
def mlp(in_dim: int, out_dim: int, image_shape: tuple[int, ...] | None = None, role: str = "encoder", *,
        hidden: Annotated[tuple[int, ...], HIDDEN] = (256,),
        activation: Annotated[str, ACTIVATION] = "relu") -> MLP:
    """MLP with 0-4 hidden layers (hidden = [] is linear: with gaussian_learned, probabilistic PCA)."""
    return MLP(in_dim, hidden, out_dim, activation)
