"""Small convolutional encoder and decoder: stride-2 layers with batch norm."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from ppvae import registry
from ppvae.nn.activations import ACTIVATION, ACTIVATIONS


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (4x4, batch norm) halving the image each layer, then a linear head."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...], out_dim: int, activation: str):
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

    def __init__(self, in_dim: int, channels: tuple[int, ...], image_shape: tuple[int, int, int],
                 outputs_per_pixel: int, activation: str):
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


@registry.register("network", "cnn", flat_input=False)
def cnn(in_dim: int, out_dim: int, image_shape: tuple[int, ...] | None = None, role: str = "encoder", *,
        hidden: Annotated[tuple[int, ...], registry.Param("> 0", "channels per stride-2 layer, 1 to 4",
                                                           length=(1, 4))] = (32, 64),
        activation: Annotated[str, ACTIVATION] = "relu") -> nn.Module:
    """1-4 stride-2 conv layers with batch norm; hidden lists channels. An encoder reads images of
    the data's shape; a decoder writes out_dim / pixels values per pixel."""
    if role == "encoder":
        return ConvEncoder(image_shape, hidden, out_dim, activation)
    return ConvDecoder(in_dim, hidden, image_shape, out_dim // math.prod(image_shape), activation)
