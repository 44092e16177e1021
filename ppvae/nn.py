"""Networks shared by encoders (guides/) and decoders (models/).

Every network maps ``[..., in_dim] -> [..., out_dim]`` on flat vectors, whatever leading
(particle, batch) dimensions it is given; convolutional ones reshape to images inside.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

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


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (4x4, batch norm) halving the image each layer, then a linear head."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], out_dim: int, activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), ACTIVATIONS[activation]()]
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x.reshape(-1, *self.image_shape)))
        return out.reshape(*x.shape[:-1], -1)


class ConvDecoder(nn.Module):
    """Linear map to a small feature map, stride-2 transposed convolutions (batch norm) up to the image.

    The last layer has ``channels_out = C * outputs_per_pixel`` channels, flattened channel-major
    so that a likelihood's ``chunk(..., dim=-1)`` splits it into whole images.
    """

    def __init__(self, in_dim: int, channels: list[int], image_shape: tuple[int, int, int], outputs_per_pixel: int,
                 activation: str):
        super().__init__()
        c, self.height, self.width = image_shape
        scale = 2 ** len(channels)
        self.start = (channels[0], math.ceil(self.height / scale), math.ceil(self.width / scale))
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Linear(in_dim, math.prod(self.start)), act(), nn.Unflatten(1, self.start)]
        for width_in, width_out in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1), nn.BatchNorm2d(width_out), act()]
        layers.append(nn.ConvTranspose2d(channels[-1], c * outputs_per_pixel, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z.reshape(-1, z.shape[-1]))[..., : self.height, : self.width]
        return out.reshape(*z.shape[:-1], -1)


def make_network(cfg: NetworkConfig, in_dim: int, out_dim: int, image_shape: tuple[int, ...] | None = None,
                 role: str = "encoder") -> nn.Module:
    """The network a ``NetworkConfig`` describes. A CNN ``encoder`` reads images of ``image_shape``;
    a CNN ``decoder`` writes ``out_dim / prod(image_shape)`` values per pixel."""
    if cfg.kind == "mlp":
        return MLP(in_dim, list(cfg.hidden), out_dim, cfg.activation)
    if role == "encoder":
        return ConvEncoder(image_shape, list(cfg.hidden), out_dim, cfg.activation)
    return ConvDecoder(in_dim, list(cfg.hidden), image_shape, out_dim // math.prod(image_shape), cfg.activation)


@contextlib.contextmanager
def eval_mode(*parts: object) -> Iterator[None]:
    """Put the nn.Module parts of a pair in eval mode (batch norm uses running statistics), then restore."""
    modules = [p for p in parts if isinstance(p, nn.Module)]
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, was):
            m.train(mode)
