"""CIFAR-10 through torchvision: 50,000 training and 10,000 test colour images of 32 x 32, 10 classes."""

from __future__ import annotations

from ppvae import registry
from ppvae.data.files import data_root
from ppvae.data.images import ImageFiles, Splits, missing
from ppvae.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@registry.register("dataset", "cifar10", labels=True)
class Cifar10(ImageFiles):
    """CIFAR-10 (torchvision's reader of cifar-10-batches-py/ under data_dir), official train/test split;
    32 x 32 colour unless size or grey say otherwise."""

    def splits(self) -> Splits:
        from torchvision.datasets import CIFAR10

        root = data_root(self.data_dir)
        files = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
        missing(root / CIFAR10.base_folder, files, "CIFAR-10",
                f"Download {URL} (it cannot be downloaded here) and unpack it there (tar xzf).")
        try:
            return {split: CIFAR10(str(root), train=split == "train", transform=self.transform(), download=False)
                    for split in ("train", "test")}
        except RuntimeError as e:  # torchvision's md5 check of the batch files
            raise DataError(f"CIFAR-10 under {root / CIFAR10.base_folder} is damaged ({e}); unpack "
                            f"{URL} there again.") from None
