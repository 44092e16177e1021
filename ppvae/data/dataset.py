"""The in-memory data set every run trains on, and the base of every data set part."""

from __future__ import annotations

import warnings
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
    valid_x: torch.Tensor | None = None  # held out of training, for the validation bound and early stopping
    valid_y: torch.Tensor | None = None
    images: bool = True  # False: rows of real-valued features, drawn per feature instead of as images
    shift: torch.Tensor | None = None  # per-feature standardization: the model sees (x - shift) / scale
    scale: torch.Tensor | None = None
    stream: torch.utils.data.Dataset | None = None  # the whole training set on disk; train_x: its first images
    workers: int = 0  # DataLoader processes reading ``stream``
    threshold: float = 0.5  # binarize = "threshold": pixels above it are 1

    @property
    def x_dim(self) -> int:
        return self.train_x.shape[1]

    @property
    def num_train(self) -> int:
        """Training points per epoch (all of a streamed set, not only the ones held in memory)."""
        return self.train_x.shape[0] if self.stream is None else len(self.stream)

    @property
    def binarization(self) -> str:
        """How the pixels were made binary, as a run records it: "threshold > 0.5", "dynamic", "none", ..."""
        return f"threshold > {self.threshold:g}" if self.binarize == "threshold" else self.binarize

    @property
    def binary(self) -> bool:
        """True when every value the model will see is 0 or 1."""
        return self.binarize != "none" or bool(((self.train_x == 0) | (self.train_x == 1)).all())

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, train_x=move(self.train_x), test_x=move(self.test_x), train_y=move(self.train_y),  # not the stream
                       test_y=move(self.test_y), valid_x=move(self.valid_x), valid_y=move(self.valid_y),
                       shift=move(self.shift), scale=move(self.scale))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """Values in the data's own units as the model sees them (unchanged without standardization)."""
        return x if self.shift is None else (x - self.shift) / self.scale

    def original(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees (data, reconstructions, samples) back in the data's own units."""
        return x if self.shift is None else x * self.scale + self.shift

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Training minibatches ``(x, y)``: indexing on the data's device, or for a streamed set a DataLoader
        over the same order of indices (so a seed gives the same batches either way)."""
        n = self.num_train
        device = self.train_x.device
        order = torch.randperm(n, generator=generator, device="cpu") if shuffle else torch.arange(n)
        if self.stream is None:
            order = order.to(device)
            pairs = ((self.train_x[idx], None if self.train_y is None else self.train_y[idx])
                     for idx in order.split(batch_size))
        else:
            # its own generator: a DataLoader seeds its workers from the global RNG otherwise, which would shift
            # every later draw (dynamic binarization, the estimator's noise) against the in-memory path
            loader = torch.utils.data.DataLoader(self.stream, batch_sampler=[b.tolist() for b in order.split(batch_size)],
                                                 num_workers=self.workers, pin_memory=device.type == "cuda",
                                                 generator=torch.Generator())
            pairs = ((x.to(device, non_blocking=True), None if (y < 0).any() else y.to(device)) for x, y in loader)
        streamed_threshold = self.stream is not None and self.binarize == "threshold"
        for x, y in pairs:  # held in memory, a thresholded set is thresholded already; a streamed one here
            if self.binarize == "dynamic":
                x = torch.bernoulli(x)
            elif streamed_threshold:
                x = thresholded(x, self.threshold)
            yield x, y


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, ...], int]


class DataSource:
    """A data set part: reads raw arrays (``arrays``), then ``load`` splits, slices and binarizes them."""

    def __init__(self, *,
                 binarize: Annotated[str, Param(doc="threshold: x > data.threshold; static: one fixed Bernoulli draw; "
                                                    "dynamic: a fresh draw every batch (test set drawn once)",
                                                choices=("none", "threshold", "static", "dynamic"))] = "none",
                 threshold: Annotated[float, Param("in [0, 1)", "with binarize = 'threshold', pixels above it are 1 "
                                                                "(0: every pixel that is not black)")] = 0.5,
                 test_fraction: Annotated[float, Param("in (0, 1)", "held-out share for sets without an official "
                                                                    "split")] = 0.2,
                 max_train: Annotated[int, Param(">= 0", "use only the first N training points (0: all)")] = 0,
                 max_test: Annotated[int, Param(">= 0", "use only the first N test points (0: all)")] = 0,
                 validation: Annotated[float, Param(">= 0", "points held out of the training set for the validation "
                                                            "bound: a count (10000) or a share (0.1); 0: none. A set "
                                                            "with its own validation file uses it")] = 0.0,
                 seed: Annotated[int, Param("in [0, 4294967295]", "seed of the split and of static "
                                                                   "binarization")] = 0,
                 data_dir: Annotated[str, Param(doc="folder holding the raw files; default $PPVAE_DATA or "
                                                    "~/.cache/ppvae")] = "",
                 download: Annotated[bool, Param(doc="try to download missing files (needs network)")] = True):
        if threshold != 0.5 and binarize != "threshold":  # warned, not refused: a study scale may override binarize
            warnings.warn(f"data.threshold = {threshold:g} is ignored: it applies only with data.binarize = "
                          f"'threshold' (this run's is {binarize!r})", stacklevel=2)
        self.binarize, self.threshold, self.test_fraction, self.seed = binarize, threshold, test_fraction, seed
        self.max_train, self.max_test, self.validation = max_train, max_test, validation
        self.data_dir, self.download = data_dir, download
        self.real_valued = False  # real numbers, not intensities in [0, 1]
        self.standardize = False  # per feature, by the training split's mean and standard deviation
        self.images = True  # False: rows of features, not pixels (what the figures draw)

    def arrays(self) -> Arrays:
        """``(train_x, test_x, train_y, test_y, image_shape, num_classes)`` with flat images in [0, 1]."""
        raise NotImplementedError

    def split(self, x: np.ndarray, y: np.ndarray | None) -> tuple:
        """A random train/test split by ``test_fraction`` (for sets without an official one)."""
        perm = np.random.default_rng(self.seed).permutation(len(x))
        n_test = max(1, int(round(self.test_fraction * len(x))))
        test, train = perm[:n_test], perm[n_test:]
        return x[train], x[test], (None if y is None else y[train]), (None if y is None else y[test])

    def validation_split(self, x: np.ndarray, y: np.ndarray | None) -> tuple:
        """(train_x, train_y, valid_x, valid_y): ``validation`` points drawn at random (seeded) from the training
        set. A set with an official validation part overrides this to return it."""
        n = int(round(self.validation * len(x))) if self.validation < 1 else int(self.validation)
        if not 0 < n < len(x):
            raise DataError(f"data.validation = {self.validation:g} holds out {n} of the {len(x)} training points; "
                            "give a count below that, or a share in (0, 1).")
        perm = np.random.default_rng([self.seed, 1]).permutation(len(x))
        keep, held = np.sort(perm[n:]), np.sort(perm[:n])
        return x[keep], None if y is None else y[keep], x[held], None if y is None else y[held]

    def load(self, name: str) -> Dataset:
        train_x, test_x, train_y, test_y, shape, num_classes = self.arrays()
        valid_x = valid_y = None
        if self.validation:
            train_x, train_y, valid_x, valid_y = self.validation_split(train_x, train_y)
        tensor = lambda a, dtype: None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        train_x, test_x, valid_x = (tensor(a, torch.float32) for a in (train_x, test_x, valid_x))
        train_y, test_y, valid_y = (tensor(a, torch.int64) for a in (train_y, test_y, valid_y))
        if self.max_train:
            train_x, train_y = train_x[:self.max_train], None if train_y is None else train_y[:self.max_train]
        if self.max_test:
            test_x, test_y = test_x[:self.max_test], None if test_y is None else test_y[:self.max_test]
        for part, x in (("training", train_x), ("test", test_x), ("validation", valid_x)):
            if x is not None and not torch.isfinite(x).all():
                raise DataError(f"The {part} images of {name!r} contain NaN or infinite values; clean the data first.")
        shift = scale = None
        if self.real_valued and self.binarize != "none":
            raise DataError(f"data.binarize = {self.binarize!r} draws 0/1 pixels from intensities in [0, 1]; "
                            f"{name!r} holds real values: set data.binarize = 'none' and use a Gaussian likelihood.")
        if self.standardize:
            shift, scale = train_x.mean(0), train_x.std(0)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant feature stays as it is
            train_x, test_x = (train_x - shift) / scale, (test_x - shift) / scale
            valid_x = None if valid_x is None else (valid_x - shift) / scale
        train_x, test_x, valid_x = self.binarized(train_x, test_x, valid_x)
        return Dataset(name, train_x, test_x, shape, train_y, test_y, self.binarize, num_classes, valid_x, valid_y,
                       self.images, shift, scale, threshold=self.threshold)

    def binarized(self, train_x: torch.Tensor, test_x: torch.Tensor,
                  valid_x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The three parts binarized as ``binarize`` says, each with a seed of its own; a dynamic set's training
        images stay grey (drawn afresh every batch)."""
        bin_ = lambda t, offset: None if t is None else binarized(t, self.binarize, self.seed + offset,  # noqa: E731
                                                                  self.threshold)
        return (train_x if self.binarize == "dynamic" else bin_(train_x, 0)), bin_(test_x, 1), bin_(valid_x, 2)


def checked_labels(y: np.ndarray | None, n: int, path: object, what: str) -> tuple[np.ndarray | None, int]:
    """``y`` as class indices 0..K-1 of ``n`` points, and K (0 without labels); a clear error otherwise."""
    if y is None:
        return None, 0
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {what} has shape {y.shape} but there are {n} points; it must be one label per "
                        "point, shape (N,).")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise DataError(f"{path}: {what} has non-integer labels (dtype {y.dtype}); map them to integers 0..K-1, or "
                        "drop them.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{path}: {what} has negative labels; map them to integers 0..K-1.")
    num_classes = int(y.max()) + 1
    if num_classes > n:  # e.g. raw ids: a CVAE would build a one-hot layer this wide
        raise DataError(f"{path}: {what} goes up to {num_classes - 1}, more classes than the {n} points; labels are "
                        "class indices 0..K-1: relabel with np.unique(y, return_inverse=True)[1].")
    return y, num_classes


def binarized(x: torch.Tensor, how: str, seed: int, threshold: float = 0.5) -> torch.Tensor:
    """``x`` thresholded, or one seeded Bernoulli draw of it ("static", and a "dynamic" set's test images)."""
    if how == "threshold":
        return thresholded(x, threshold)
    if how in ("static", "dynamic"):
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x, generator=g)
    return x


def thresholded(x: torch.Tensor, level: float) -> torch.Tensor:
    """1 where ``x`` is above ``level``, else 0."""
    return (x > level).to(x.dtype)


__all__ = ["Dataset", "DataSource", "Arrays", "checked_labels", "binarized", "thresholded"]
