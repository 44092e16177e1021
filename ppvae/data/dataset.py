"""The in-memory data set every run trains on, and the base of every data set part."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
import torch

from ppvae.errors import DataError
from ppvae.registry import Param


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


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, ...], int]


class DataSource:
    """A data set part: reads raw arrays (``arrays``), then ``load`` splits, slices and binarizes them."""

    def __init__(self, *,
                 binarize: Annotated[str, Param(doc="threshold: x > 0.5; static: one fixed Bernoulli draw; dynamic: a "
                                                    "fresh draw every batch (test set drawn once)",
                                                choices=("none", "threshold", "static", "dynamic"))] = "none",
                 test_fraction: Annotated[float, Param("in (0, 1)", "held-out share for sets without an official "
                                                                    "split")] = 0.2,
                 max_train: Annotated[int, Param(">= 0", "use only the first N training points (0: all)")] = 0,
                 max_test: Annotated[int, Param(">= 0", "use only the first N test points (0: all)")] = 0,
                 seed: Annotated[int, Param("in [0, 4294967295]", "seed of the split and of static "
                                                                   "binarization")] = 0,
                 data_dir: Annotated[str, Param(doc="folder holding the raw files; default $PPVAE_DATA or "
                                                    "~/.cache/ppvae")] = "",
                 download: Annotated[bool, Param(doc="try to download missing files (needs network)")] = True):
        self.binarize, self.test_fraction, self.seed = binarize, test_fraction, seed
        self.max_train, self.max_test = max_train, max_test
        self.data_dir, self.download = data_dir, download

    def arrays(self) -> Arrays:
        """``(train_x, test_x, train_y, test_y, image_shape, num_classes)`` with flat images in [0, 1]."""
        raise NotImplementedError

    def split(self, x: np.ndarray, y: np.ndarray | None) -> tuple:
        """A random train/test split by ``test_fraction`` (for sets without an official one)."""
        perm = np.random.default_rng(self.seed).permutation(len(x))
        n_test = max(1, int(round(self.test_fraction * len(x))))
        test, train = perm[:n_test], perm[n_test:]
        return x[train], x[test], (None if y is None else y[train]), (None if y is None else y[test])

    def load(self, name: str) -> Dataset:
        train_x, test_x, train_y, test_y, shape, num_classes = self.arrays()
        tensor = lambda a, dtype: None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        train_x, test_x = tensor(train_x, torch.float32), tensor(test_x, torch.float32)
        train_y, test_y = tensor(train_y, torch.int64), tensor(test_y, torch.int64)
        if self.max_train:
            train_x, train_y = train_x[:self.max_train], None if train_y is None else train_y[:self.max_train]
        if self.max_test:
            test_x, test_y = test_x[:self.max_test], None if test_y is None else test_y[:self.max_test]
        for part, x in (("training", train_x), ("test", test_x)):
            if not torch.isfinite(x).all():
                raise DataError(f"The {part} images of {name!r} contain NaN or infinite values; clean the data first.")
        if self.binarize != "dynamic":
            train_x = _binarize(train_x, self.binarize, self.seed)
        test_x = _binarize(test_x, self.binarize, self.seed + 1)
        return Dataset(name, train_x, test_x, shape, train_y, test_y, self.binarize, num_classes)


def _binarize(x: torch.Tensor, how: str, seed: int) -> torch.Tensor:
    if how == "threshold":
        return (x > 0.5).float()
    if how in ("static", "dynamic"):
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x, generator=g)
    return x


__all__ = ["Dataset", "DataSource", "Arrays"]
