"""Random streams of their own: measurements that draw neither depend on nor disturb training's draws."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def own_stream(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """Fork torch's random state (the CPU's, and ``device``'s where it is a GPU) for the block, seeded with
    ``seed`` where given; the caller's stream continues afterwards as if the block had not drawn."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield


__all__ = ["own_stream"]
