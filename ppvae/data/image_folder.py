"""Your own images: a folder of PNG / JPEG files (any tree), read through torchvision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch.utils.data import Subset

from ppvae import registry
from ppvae.data.images import ImageFiles, Splits
from ppvae.errors import ConfigError, DataError
from ppvae.registry import Param


class _Files(torch.utils.data.Dataset):
    """Image files without class folders, as (image, 0)."""

    def __init__(self, paths: list[Path], transform):
        from torchvision.datasets.folder import default_loader

        self.paths, self.transform, self.loader = paths, transform, default_loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(self.loader(str(self.paths[i]))), 0


@registry.register("dataset", "image_folder", labels=None)
class ImageFolder(ImageFiles):
    """A folder of images (data.path): with sub-folders, one class per sub-folder (torchvision's ImageFolder);
    flat, unlabelled. Resized and center-cropped to size x size, grey if asked; split at random by test_fraction."""

    def __init__(self, *, path: Annotated[str, Param(doc="the folder of images")] = "", **common):
        super().__init__(**common)
        self.path = path

    @staticmethod
    def check_params(params: dict, key: str) -> None:
        if not params["path"]:
            raise ConfigError(f"{key}.name = 'image_folder' needs {key}.path = 'folder/' (PNG or JPEG files, "
                              "optionally in one sub-folder per class).")

    def splits(self) -> Splits:
        from torchvision.datasets import ImageFolder as Reader
        from torchvision.datasets.folder import IMG_EXTENSIONS

        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise DataError(f"data.path {str(root)!r} is not a folder; point it at a folder of PNG or JPEG images.")
        flat = sorted(p for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        classes = [d for d in root.iterdir() if d.is_dir()]
        self.labelled = bool(classes) and not flat
        if self.labelled:
            try:
                items = Reader(str(root), transform=self.transform())
            except FileNotFoundError as e:  # a class folder without images
                raise DataError(f"{root}: {e}; every sub-folder must hold images of its class.") from None
        elif flat:
            items = _Files(flat, self.transform())
        else:
            raise DataError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS)}), neither directly nor in "
                            "sub-folders.")
        if len(items) < 2:
            raise DataError(f"{root} holds {len(items)} image; at least 2 are needed for a train/test split.")
        train, test = self.split(np.arange(len(items)), None)[:2]
        return {"train": Subset(items, train.tolist()), "test": Subset(items, test.tolist())}
