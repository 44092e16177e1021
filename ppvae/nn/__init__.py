"""Networks shared by encoders (guides/) and decoders (models/), registered as parts of kind ``network``.

Every network maps ``[..., in_dim] -> [..., out_dim]`` on flat vectors, whatever leading
(particle, batch) dimensions it is given; convolutional ones reshape to images inside. A
network part is a function ``(in_dim, out_dim, image_shape, role, **params) -> nn.Module``
(``role`` is ``"encoder"`` or ``"decoder"``); each file in this folder defines one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry


def make_network(spec: registry.Spec, in_dim: int, out_dim: int, image_shape: tuple[int, ...] | None = None,
                 role: str = "encoder") -> nn.Module:
    """The network a ``network`` spec describes, from ``in_dim`` inputs to ``out_dim`` outputs."""
    return spec.create(in_dim, out_dim, image_shape, role)


def with_labels(h: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Append one-hot labels to the last dimension (broadcast over particle dims); a no-op when
    ``num_classes`` is 0. Conditional pairs (CVAE) use it on both decoder and encoder inputs."""
    if not num_classes:
        return h
    if y is None:
        raise ValueError("This is a conditional (CVAE) pair: call it with labels y.")
    onehot = F.one_hot(y, num_classes).to(h.dtype)
    return torch.cat([h, onehot.expand(h.shape[:-1] + (num_classes,))], dim=-1)


def _modules(parts: tuple) -> list[nn.Module]:
    return [m for p in parts if isinstance(p, nn.Module) for m in p.modules()]


@contextlib.contextmanager
def eval_mode(*parts: object) -> Iterator[None]:
    """Put the nn.Module parts of a pair in eval mode (batch norm uses running statistics), then give each
    submodule back its own mode (a part may hold a frozen, eval-mode piece inside a training one)."""
    was = [(m, m.training) for m in _modules(parts)]  # parents before their children
    for p in parts:
        if isinstance(p, nn.Module):
            p.eval()
    try:
        yield
    finally:
        for m, mode in was:
            m.train(mode)


@contextlib.contextmanager
def kept_buffers(*parts: object) -> Iterator[None]:
    """Run with the nn.Module parts' buffers (batch norm's running statistics) restored afterwards: an
    analysis that runs a pair in training mode must not leave it changed for the ones after it."""
    saved = [(b, b.detach().clone()) for m in _modules(parts) for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


registry.discover(__name__)

__all__ = ["make_network", "with_labels", "eval_mode", "kept_buffers"]
