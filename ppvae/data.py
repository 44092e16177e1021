"""Datasets as flat float tensors kept whole in memory (and on the device), with batching.

A :class:`Dataset` holds train and test images flattened to ``[N, D]`` in [0, 1], their
``image_shape`` for plots and CNNs, optional integer labels, and the binarization rule.
With ``binarize = "dynamic"`` the stored training images are grey levels and every batch
is a fresh Bernoulli draw; the test set is binarized once with a fixed seed, as in
Burda et al. (2015).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ppvae.config import DataConfig
from ppvae.errors import DataError


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor
    test_x: torch.Tensor
    image_shape: tuple[int, ...]
    train_y: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    binarize: str = "none"
    num_classes: int = 0

    @property
    def x_dim(self) -> int:
        return self.train_x.shape[1]

    @property
    def binary(self) -> bool:
        """True when every value the model will see is 0 or 1."""
        return self.binarize != "none" or bool(((self.train_x == 0) | (self.train_x == 1)).all())

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, train_x=move(self.train_x), test_x=move(self.test_x),
                       train_y=move(self.train_y), test_y=move(self.test_y))

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Training minibatches ``(x, y)``; indexing stays on the data's device (no DataLoader)."""
        n = self.train_x.shape[0]
        device = self.train_x.device
        order = (torch.randperm(n, generator=generator, device="cpu").to(device)
                 if shuffle else torch.arange(n, device=device))
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.train_x[idx]
            if self.binarize == "dynamic":
                x = torch.bernoulli(x)
            yield x, (None if self.train_y is None else self.train_y[idx])


def default_data_dir(cfg: DataConfig) -> Path:
    return Path(cfg.data_dir or os.environ.get("PPVAE_DATA", "") or Path.home() / ".cache" / "ppvae")


def _split(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(fraction * len(x))))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], x[test], (None if y is None else y[train]), (None if y is None else y[test])


def _load_digits(cfg: DataConfig) -> tuple:
    """scikit-learn's 8x8 digits (1797 images, shipped with the library: no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return (*_split(x, d.target.astype(np.int64), cfg.test_fraction, cfg.seed), (1, 8, 8), 10)


_LOADERS = {"digits": _load_digits}


def _binarize(x: torch.Tensor, how: str, seed: int) -> torch.Tensor:
    if how == "threshold":
        return (x > 0.5).float()
    if how in ("static", "dynamic"):
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x, generator=g)
    return x


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset a ``[data]`` section names, split, slice and binarize it."""
    if cfg.name not in _LOADERS:
        raise DataError(f"Dataset {cfg.name!r} is not available; choose one of {', '.join(_LOADERS)}.")
    train_x, test_x, train_y, test_y, shape, num_classes = _LOADERS[cfg.name](cfg)
    tensor = lambda a, dtype: None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    train_x, test_x = tensor(train_x, torch.float32), tensor(test_x, torch.float32)
    train_y, test_y = tensor(train_y, torch.int64), tensor(test_y, torch.int64)
    if cfg.max_train:
        train_x, train_y = train_x[:cfg.max_train], None if train_y is None else train_y[:cfg.max_train]
    if cfg.max_test:
        test_x, test_y = test_x[:cfg.max_test], None if test_y is None else test_y[:cfg.max_test]
    for part, x in (("training", train_x), ("test", test_x)):
        if not torch.isfinite(x).all():
            raise DataError(f"The {part} images of {cfg.name!r} contain NaN or infinite values; clean the data first.")
    if cfg.binarize != "dynamic":
        train_x = _binarize(train_x, cfg.binarize, cfg.seed)
    test_x = _binarize(test_x, cfg.binarize, cfg.seed + 1)
    return Dataset(cfg.name, train_x, test_x, shape, train_y, test_y, cfg.binarize, num_classes)
