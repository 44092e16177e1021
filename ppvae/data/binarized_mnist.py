"""Larochelle & Murray's fixed binarization of MNIST (the ``.amat`` files)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import numpy as np

from ppvae import registry, runs
from ppvae.data.dataset import Arrays, DataSource
from ppvae.data.files import cache_file, check_md5, data_root, download, missing_files_error, read_bytes
from ppvae.errors import DataError, WriteError
from ppvae.registry import Param

URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
MD5 = {  # of the uncompressed .amat files
    "train": "db28b1a6ae0fe70cbd3da91acf46e477",
    "valid": "bf37822a04e94123630de6a7dfd9c9ef",
    "test": "14e41ae11040adba6ab8cb291eda0dd8",
}
ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
TEST_ORDER_SEED = 0  # the fixed order of the class-sorted test set (see BinarizedMNIST)


def read_amat(path: Path, split: str) -> np.ndarray:
    """Parse a 0/1 ``.amat`` (or ``.amat.gz``) as uint8 [N, 784] at numpy speed (np.loadtxt takes ~1 min).

    A bit-packed ``.npy`` copy is cached (:func:`cache_file`) when the cache folder is writable.
    """
    cache = cache_file(path, f"binarized_mnist_{split}.packed.npy")
    if cache.is_file() and cache.stat().st_mtime >= path.stat().st_mtime:
        with contextlib.suppress(Exception):
            packed = np.load(cache, allow_pickle=False)
            if packed.shape == (ROWS[split], 98) and packed.dtype == np.uint8:
                return np.unpackbits(packed, axis=1, count=784)
    raw = read_bytes(path)
    check_md5(path, MD5[split], raw)
    chars = np.frombuffer(raw, dtype=np.uint8)
    bits = chars[(chars == ord("0")) | (chars == ord("1"))] - ord("0")
    rows = ROWS[split]
    if bits.size != rows * 784:
        raise DataError(f"{path} holds {bits.size} values, expected {rows} rows of 784.")
    bits = bits.reshape(rows, 784)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npy")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, np.packbits(bits, axis=1))
        os.replace(tmp, cache)
    except OSError:  # no cache: the next load parses the file again
        with contextlib.suppress(OSError):
            tmp.unlink()
    return bits


def matched_labels(bits: np.ndarray, grey: np.ndarray, labels: np.ndarray, block: int = 4000) -> np.ndarray:
    """The label of the grey-level image most likely to have drawn each binary image (Bernoulli pixels,
    intensities clipped to [0.001, 0.999]): the binarized files are one Bernoulli draw of MNIST, reordered."""
    import torch

    p = torch.from_numpy(np.clip(grey, 1e-3, 1 - 1e-3).astype(np.float32))
    logit, base = (torch.log(p) - torch.log1p(-p)).T.contiguous(), torch.log1p(-p).sum(1)
    x = torch.from_numpy(bits.astype(np.float32))
    best = torch.cat([(x[rows] @ logit + base).argmax(1) for rows in torch.arange(len(x)).split(block)])
    return labels[best.numpy()]


@registry.register("dataset", "binarized_mnist", binary=True, labels=None)
class BinarizedMNIST(DataSource):
    """Larochelle & Murray's fixed binarization: train + valid (60,000), test (10,000); no labels unless asked.

    Files: ``<data_dir>/binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]``; train is their
    train (50,000) and valid (10,000) concatenated, so the split matches MNIST and Burda et al. (2015).
    The test file is sorted by digit class (its first 1,000 images are zeros), so it is put in
    a fixed shuffled order (``TEST_ORDER_SEED``): then the first N points (``max_test``,
    ``eval.num_test``) are a fair sample, and the whole set gives the same numbers as before.
    With ``validation`` (any value above 0) their validation file is the validation set and their
    training file alone (50,000) the training set: Larochelle & Murray's 50,000 / 10,000 / 10,000.

    With ``labels`` each image gets the digit of the MNIST image it was drawn from (:func:`matched_labels`,
    cached): a CVAE trains and is tested on the same images as the unconditional rows. The test file is
    MNIST's test set sorted by class (the matched labels agree with that order exactly).
    """

    def __init__(self, *, labels: Annotated[bool, Param(doc="attach MNIST's digit labels, matched from MNIST's "
                                                           "raw files in the same data folder (a minute, once)")]
                 = False, **common):
        super().__init__(**common)
        self.labels = labels

    def _labels(self, paths: dict[str, Path], images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Matched labels of the train + valid and test images, cached beside the packed images."""
        cache = cache_file(paths["test"], "binarized_mnist_labels.npz")
        newest = max(p.stat().st_mtime for p in paths.values())
        if cache.is_file() and cache.stat().st_mtime >= newest:
            with contextlib.suppress(Exception), np.load(cache) as f:
                return {"train": f["train"], "test": f["test"]}
        from ppvae.data.mnist import MNIST

        grey_train, grey_test, y_train, y_test, _, _ = MNIST(data_dir=self.data_dir, download=self.download).arrays()
        out = {"train": matched_labels(images["train"], grey_train, y_train),
               "test": matched_labels(images["test"], grey_test, y_test)}
        with contextlib.suppress(OSError, WriteError):  # no cache: the next load matches again
            cache.parent.mkdir(parents=True, exist_ok=True)
            runs.write_npz(cache, out)
        return out

    def validation_split(self, x: np.ndarray, y: np.ndarray | None) -> tuple:
        """The official split: ``arrays`` put the validation file's 10,000 images after the training file's."""
        n = ROWS["valid"]
        return x[:-n], None if y is None else y[:-n], x[-n:], None if y is None else y[-n:]

    def arrays(self) -> Arrays:
        folder = data_root(self.data_dir) / "binarized_mnist"
        paths = {}
        for split in ("train", "valid", "test"):
            base = folder / f"binarized_mnist_{split}.amat"
            paths[split] = next((p for p in (base, base.with_name(base.name + ".gz")) if p.is_file()), None)
        missing = [s for s, p in paths.items() if p is None]
        failure = None
        for split in missing if self.download else []:
            name = f"binarized_mnist_{split}.amat"
            failure = download([URL + name], folder, name, MD5[split])
            if failure:
                break
            paths[split] = folder / name
        if missing and (failure or not self.download):
            names = [f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]
            raise missing_files_error("Binarized MNIST (plain .amat or gzipped .amat.gz)", folder, names,
                                      self.download, failure, URL)
        images = {"train": np.concatenate([read_amat(paths["train"], "train"), read_amat(paths["valid"], "valid")]),
                  "test": read_amat(paths["test"], "test")}
        labels = self._labels(paths, images) if self.labels else {"train": None, "test": None}
        order = np.random.default_rng(TEST_ORDER_SEED).permutation(ROWS["test"])
        test_y = None if labels["test"] is None else labels["test"][order]
        return (images["train"].astype(np.float32), images["test"][order].astype(np.float32), labels["train"], test_y,
                (1, 28, 28), 10 if self.labels else 0)
