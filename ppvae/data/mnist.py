"""MNIST and Fashion-MNIST from torchvision's raw files, official 60,000 / 10,000 split."""

from __future__ import annotations

import numpy as np

from ppvae import registry
from ppvae.data.dataset import Arrays, DataSource
from ppvae.data.files import check_md5, data_root, download, missing_files_error, read_bytes
from ppvae.errors import DataError

IMAGES, LABELS = "images", "labels"


def read_idx(path, kind: str, count: int) -> np.ndarray:
    """Parse one IDX file (``.gz`` or extracted) with numpy: torchvision reads only extracted files,
    which a read-only shared folder holding the ``.gz`` originals cannot provide."""
    raw = read_bytes(path)
    ndim = 3 if kind == IMAGES else 1
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path} is not an MNIST IDX {kind} file; delete it and download or copy it again.")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != count:
        raise DataError(f"{path} holds {dims[0]} {kind}, not the {count} of this split; "
                        "delete it and download or copy it again.")
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {len(raw)} bytes of the {header + int(np.prod(dims))} its header "
                        "promises; delete it and download or copy it again.")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    return data.reshape(dims[0], -1) if kind == IMAGES else data.astype(np.int64)


class _TorchvisionIDX(DataSource):
    """Files in torchvision's raw layout ``<data_dir>/<Class>/raw``; ``.gz`` files are md5-checked,
    extracted ones (as torchvision leaves them) are accepted too."""

    torchvision_class = ""
    md5s: dict[str, str] = {}

    def arrays(self) -> Arrays:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_class)
        folder = data_root(self.data_dir) / cls.__name__ / "raw"

        def present(name: str):
            return next((p for p in (folder / name, folder / name.removesuffix(".gz")) if p.is_file()), None)

        missing = [n for n in self.md5s if present(n) is None]
        if missing:
            failure = None
            if self.download:
                for name in missing:
                    failure = download([m + name for m in cls.mirrors], folder, name, self.md5s[name])
                    if failure:
                        break
            if failure or not self.download:
                raise missing_files_error(cls.__name__, folder, list(self.md5s), self.download, failure,
                                          " or ".join(cls.mirrors))
        paths = {n: present(n) for n in self.md5s}
        for name, path in paths.items():
            if path.suffix == ".gz":
                check_md5(path, self.md5s[name])
        out = []
        for split, n in (("train", 60_000), ("t10k", 10_000)):
            out.append(read_idx(paths[f"{split}-images-idx3-ubyte.gz"], IMAGES, n).astype(np.float32) / 255.0)
            out.append(read_idx(paths[f"{split}-labels-idx1-ubyte.gz"], LABELS, n))
        train_x, train_y, test_x, test_y = out
        return train_x, test_x, train_y, test_y, (1, 28, 28), 10


@registry.register("dataset", "mnist", labels=True)
class MNIST(_TorchvisionIDX):
    """MNIST digits in grey levels (set binarize for a Bernoulli likelihood), 60,000 / 10,000."""

    torchvision_class = "MNIST"
    md5s = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


@registry.register("dataset", "fashion_mnist", labels=True)
class FashionMNIST(_TorchvisionIDX):
    """Fashion-MNIST clothing images in grey levels, 60,000 / 10,000."""

    torchvision_class = "FashionMNIST"
    md5s = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
