"""Image files read through torchvision (CIFAR-10, CelebA, a folder of images): the common base.

A part here returns its splits as ``torch.utils.data.Dataset`` objects of (image, label) from
torchvision's own readers, with torchvision's transforms (crop, resize, grey). The test and
validation images are decoded once into memory. The training images are too, unless
``stream = true``: then every epoch reads them from disk through a ``DataLoader`` with
``workers`` processes, and only the first ``memory_points`` training images are held in memory
for what needs training points at hand (the aggregate-posterior mixture and the ELBO split of
``ppvae sample``, the sample-quality classifier); the closed-form sigma of ``gaussian_optimal``
still reads the whole stream.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ppvae.data.dataset import Dataset, DataSource
from ppvae.errors import DataError
from ppvae.registry import Param

Splits = dict[str, torch.utils.data.Dataset]  # "train", "test" and, where the set has one, "valid"


class Flat(torch.utils.data.Dataset):
    """Items of a torchvision data set as (flat float image in [0, 1], label or -1)."""

    def __init__(self, items: torch.utils.data.Dataset, labelled: bool):
        self.items, self.labelled = items, labelled

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.items[i]
        return image.reshape(-1), int(label) if self.labelled else -1


class ImageFiles(DataSource):
    """The base of the image-file parts: ``splits()`` gives torchvision data sets of (image tensor, label)."""

    labelled = True  # whether the items carry class labels

    def __init__(self, *,
                 size: Annotated[int, Param(">= 4", "images are resized (shorter side) and center-cropped to "
                                                    "size x size")] = 32,
                 grey: Annotated[bool, Param(doc="convert to one grey channel")] = False,
                 stream: Annotated[bool, Param(doc="read the training images from disk every epoch (a DataLoader "
                                                   "with workers) instead of holding them in memory")] = False,
                 workers: Annotated[int, Param(">= 0", "DataLoader worker processes that decode images (0: in "
                                                       "this process)")] = 2,
                 memory_points: Annotated[int, Param(">= 1", "with stream = true: training images held in memory "
                                                             "for what needs them at hand")] = 10000,
                 **common):
        super().__init__(**common)
        self.size, self.grey, self.stream, self.workers, self.memory_points = size, grey, stream, workers, memory_points

    def splits(self) -> Splits:
        raise NotImplementedError

    def transform(self, crop: int | None = None) -> Callable[[Any], torch.Tensor]:
        """PIL image -> float tensor [C, size, size] in [0, 1]: an optional center crop of ``crop`` pixels
        first (CelebA's faces), then resize and center crop to ``size``, then grey if asked."""
        from torchvision.transforms import v2

        steps = [v2.ToImage()] + ([v2.CenterCrop(crop)] if crop else [])
        steps += [v2.Resize(self.size, antialias=True), v2.CenterCrop(self.size)]
        steps += [v2.Grayscale(1)] if self.grey else []
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])

    def read(self, items: torch.utils.data.Dataset | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Decode every item into memory (in batches, on ``workers`` processes)."""
        if items is None:
            return None, None
        xs, ys = [], []
        for x, y in self._loader(Flat(items, self.labelled), batch_size=256):
            xs.append(x)
            ys.append(y)
        x = torch.cat(xs) if xs else torch.zeros(0, 0)
        return x, torch.cat(ys) if self.labelled and ys else None

    def _loader(self, items: torch.utils.data.Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(items, num_workers=self.workers, persistent_workers=False, **kwargs)

    def load(self, name: str) -> Dataset:
        parts = self.splits()
        train, test, valid = parts["train"], parts["test"], parts.get("valid")
        if not self.validation:
            valid = None
        elif valid is None:  # no validation part of its own: drawn from the training set, seeded
            keep, held = self.validation_split(np.arange(len(train)), None)[::2]
            train, valid = Subset(train, keep.tolist()), Subset(train, held.tolist())
        if self.max_train:
            train = Subset(train, range(min(self.max_train, len(train))))
        if self.max_test:
            test = Subset(test, range(min(self.max_test, len(test))))
        if self.stream and self.binarize == "static":
            raise DataError("data.binarize = 'static' fixes one draw per training image in memory; with data.stream = "
                            "true use 'dynamic' (a fresh draw every batch) or 'threshold'.")
        test_x, test_y = self.read(test)
        valid_x, valid_y = self.read(valid)
        train_x, train_y = self.read(Subset(train, range(min(self.memory_points, len(train)))) if self.stream
                                     else train)
        if not len(train) or not test_x.shape[0]:
            raise DataError(f"{name!r} has {len(train)} training and {test_x.shape[0]} test images; it needs both.")
        shape = (1 if self.grey else 3, self.size, self.size)
        classes = int(max(t.max() for t in (train_y, test_y) if t is not None)) + 1 if self.labelled else 0
        train_x, test_x, valid_x = self.binarized(train_x, test_x, valid_x)
        return Dataset(name, train_x, test_x, shape, train_y, test_y, self.binarize, classes, valid_x, valid_y,
                       stream=Flat(train, self.labelled) if self.stream else None, workers=self.workers,
                       threshold=self.threshold)


def missing(root: Path, files: list[str], what: str, fix: str) -> None:
    """Raise a DataError naming the ``files`` under ``root`` that are absent, and where to get them."""
    absent = [f for f in files if not (root / f).exists()]
    if absent:
        raise DataError(f"{what} is not under {root}: missing {', '.join(absent[:6])}"
                        + (f" and {len(absent) - 6} more" if len(absent) > 6 else "")
                        + f". {fix} Set data.data_dir (or $PPVAE_DATA) to the folder that holds it.")


__all__ = ["ImageFiles", "Flat", "Splits", "missing"]
