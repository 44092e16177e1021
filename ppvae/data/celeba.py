"""CelebA through torchvision: 202,599 aligned faces (178 x 218), center-cropped and resized, 64 x 64
by default, with the official train / valid / test partition."""

from __future__ import annotations

from typing import Annotated

from ppvae import registry
from ppvae.data.files import data_root
from ppvae.data.images import ImageFiles, Splits, missing
from ppvae.errors import DataError
from ppvae.registry import Param

URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


@registry.register("dataset", "celeba", labels=False)
class CelebA(ImageFiles):
    """CelebA (torchvision's reader of celeba/ under data_dir: img_align_celeba/ and the list_*.txt files),
    its official partition (162,770 / 19,867 validation / 19,962 test); a center crop of crop pixels, then
    size x size. Too big for memory as floats (about 10 GB at 64 x 64): stream = true reads it from disk."""

    labelled = False  # its attributes and identities are not classes

    def __init__(self, *, crop: Annotated[int, Param(">= 1", "side of the center crop of each 178 x 218 face "
                                                             "before resizing")] = 148,
                 size: Annotated[int, Param(">= 4", "images are resized to size x size")] = 64, **common):
        super().__init__(size=size, **common)
        self.crop = crop

    def splits(self) -> Splits:
        from torchvision.datasets import CelebA as Reader

        root = data_root(self.data_dir)
        files = [name for _, _, name in Reader.file_list if not name.endswith(".zip")] + ["img_align_celeba"]
        missing(root / Reader.base_folder, files, "CelebA",
                f"Get the aligned images (img_align_celeba.zip, unzipped) and the five list_*.txt / identity_CelebA.txt "
                f"files from {URL} (they cannot be downloaded here) and put them in that folder.")
        try:
            return {split: Reader(str(root), split=split, target_type=[], transform=self.transform(self.crop),
                                  download=False) for split in ("train", "valid", "test")}
        except RuntimeError as e:  # torchvision's md5 check of the list files
            raise DataError(f"CelebA under {root / Reader.base_folder} failed torchvision's checksum of its list "
                            f"files ({e}); fetch them again from {URL}.") from None
