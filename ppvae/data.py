"""Datasets as flat float tensors kept whole in memory (and on the device), with batching.

A :class:`Dataset` holds train and test images flattened to ``[N, D]`` in [0, 1], their
``image_shape`` for plots and CNNs, optional integer labels, and the binarization rule.
With ``binarize = "dynamic"`` the stored training images are grey levels and every batch
is a fresh Bernoulli draw; the test set is binarized once with a fixed seed, as in
Burda et al. (2015).

Raw files live under ``data.data_dir`` (default ``$PPVAE_DATA`` or ``~/.cache/ppvae``):
``MNIST/raw/*.gz`` and ``FashionMNIST/raw/*.gz`` (torchvision's layout), ``frey_rawface.mat``,
``binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]``. They are md5-checked and read
directly, so a read-only shared copy works; a missing file is a :class:`DataError` that says
which files to put where.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import zlib
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


# --- files on disk: checksums, downloads, clear errors --------------------------------------

_DATA_DIR_HINT = "Set data.data_dir (or $PPVAE_DATA) to a folder that holds them, or copy them there."

_MNIST_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
_FREY_MD5 = "5aeb024d42b8a6091f30e5eb18c8a48d"
_BINARIZED_MD5 = {  # of the uncompressed .amat files
    "train": "db28b1a6ae0fe70cbd3da91acf46e477",
    "valid": "bf37822a04e94123630de6a7dfd9c9ef",
    "test": "14e41ae11040adba6ab8cb291eda0dd8",
}
TEST_ORDER_SEED = 0  # the fixed order of binarized MNIST's class-sorted test set (see _load_binarized_mnist)
_BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_BINARIZED_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
_DOWNLOAD_TIMEOUT_S = 20.0


def _md5(data: bytes | Path) -> str:
    if isinstance(data, Path):
        h = hashlib.md5()
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return hashlib.md5(data).hexdigest()


def _check_md5(path: Path, expected: str, data: bytes | None = None) -> None:
    """Catch truncated or altered files here, not as a confusing parse error later."""
    actual = _md5(path if data is None else data)
    if actual != expected:
        raise DataError(
            f"{path} is truncated or corrupted (md5 {actual}, expected "
            f"{expected}). Delete it and download it again, or copy it again from a good source.")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib waits forever by default; offline or firewalled machines must fail fast instead."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(urls: list[str], folder: Path, filename: str, md5: str) -> str | None:
    """Fetch ``filename`` into ``folder`` from the first URL that works; return the failure, if any.

    A partial file left by a failed attempt is removed so it is never mistaken for data.
    """
    from torchvision.datasets.utils import download_url

    errors = []
    for url in urls:
        try:
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                download_url(url, str(folder), filename=filename, md5=md5)
            return None
        except Exception as e:  # any network, disk or checksum failure becomes one DataError
            errors.append(f"{url}: {type(e).__name__}: {e}")
            with contextlib.suppress(OSError):
                (folder / filename).unlink()
    return "; ".join(errors)


def _missing_files_error(what: str, folder: Path, names: list[str], download: bool,
                         failure: str | None, urls: str = "") -> DataError:
    listed = "\n".join(f"  {folder / n}" for n in names)
    how = (f"Downloading them failed ({failure}); is there no network here? " if download and failure
           else "Downloading is off (data.download = false). " if not download else "")
    src = f" They are available from {urls}." if urls else ""
    return DataError(f"{what} files are missing. Put these files in {folder}:\n{listed}\n"
                     f"{how}{_DATA_DIR_HINT}{src}")


# --- MNIST and Fashion-MNIST -----------------------------------------------------------------

def _read_idx(path: Path, kind: str, count: int) -> np.ndarray:
    """Parse one IDX file (``.gz`` or extracted) with numpy: torchvision reads only extracted files,
    which a read-only shared folder holding the ``.gz`` originals cannot provide."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Cannot read {path} ({e}); delete it and download or copy it again.") from e
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path} is not an MNIST IDX {kind} file; delete it and download or copy it again.")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != count or len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or has {dims[0]} items instead of {count}; "
                        "delete it and download or copy it again.")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    return data.reshape(dims[0], -1) if kind == "images" else data.astype(np.int64)


def _load_mnist_like(cfg: DataConfig) -> tuple:
    """MNIST or Fashion-MNIST from torchvision's raw layout ``<root>/<Class>/raw``, official 60k/10k split.

    The ``.gz`` files are md5-checked; extracted files (as torchvision leaves them) are accepted too.
    """
    import torchvision.datasets as tvd

    cls = tvd.MNIST if cfg.name == "mnist" else tvd.FashionMNIST
    md5s = _MNIST_MD5[cfg.name]
    folder = default_data_dir(cfg) / cls.__name__ / "raw"

    def present(name: str) -> Path | None:
        for p in (folder / name, folder / name.removesuffix(".gz")):
            if p.is_file():
                return p
        return None

    missing = [n for n in md5s if present(n) is None]
    if missing:
        failure = None
        if cfg.download:
            for name in missing:
                failure = _download([m + name for m in cls.mirrors], folder, name, md5s[name])
                if failure:
                    break
        if failure or not cfg.download:
            raise _missing_files_error(f"{cls.__name__}", folder, list(md5s), cfg.download, failure,
                                       " or ".join(cls.mirrors))
    paths = {n: present(n) for n in md5s}
    for name, path in paths.items():
        if path.suffix == ".gz":
            _check_md5(path, md5s[name])
    out = []
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        out.append(_read_idx(paths[f"{split}-images-idx3-ubyte.gz"], "images", n).astype(np.float32) / 255.0)
        out.append(_read_idx(paths[f"{split}-labels-idx1-ubyte.gz"], "labels", n))
    train_x, train_y, test_x, test_y = out
    return train_x, test_x, train_y, test_y, (1, 28, 28), 10


# --- Frey Face -------------------------------------------------------------------------------

def _load_frey_face(cfg: DataConfig) -> tuple:
    """Frey Face (1965 grey images, 28 rows x 20 columns, no labels), split at random by ``test_fraction``."""
    from scipy.io import loadmat

    root = default_data_dir(cfg)
    path = root / "frey_rawface.mat"
    if not path.is_file():
        failure = _download([_FREY_URL], root, path.name, _FREY_MD5) if cfg.download else None
        if failure or not cfg.download:
            raise _missing_files_error("Frey Face", root, [path.name], cfg.download, failure, _FREY_URL)
    _check_md5(path, _FREY_MD5)
    try:
        ff = loadmat(path)["ff"]
    except Exception as e:
        raise DataError(f"Cannot read variable 'ff' from {path} ({e}); delete it and download it again.") from e
    if ff.shape != (560, 1965):
        raise DataError(f"{path}: 'ff' has shape {ff.shape}, expected (560, 1965).")
    # Column i is image i in row-major 28x20 order, so rows of ff.T are flat upright images.
    x = np.ascontiguousarray(ff.T).astype(np.float32) / 255.0
    return (*_split(x, None, cfg.test_fraction, cfg.seed), (1, 28, 20), 0)


# --- Larochelle & Murray's binarized MNIST ---------------------------------------------------

def _read_amat(path: Path, split: str) -> np.ndarray:
    """Parse a 0/1 ``.amat`` (or ``.amat.gz``) as uint8 [N, 784] at numpy speed (np.loadtxt takes ~1 min).

    A bit-packed ``.npy`` cache is written next to the file when that folder is writable.
    """
    cache = path.with_name(f"binarized_mnist_{split}.packed.npy")
    if cache.is_file() and cache.stat().st_mtime >= path.stat().st_mtime:
        with contextlib.suppress(Exception):
            packed = np.load(cache, allow_pickle=False)
            if packed.shape == (_BINARIZED_ROWS[split], 98) and packed.dtype == np.uint8:
                return np.unpackbits(packed, axis=1, count=784)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Cannot read {path} ({e}); delete it and download or copy it again.") from e
    _check_md5(path, _BINARIZED_MD5[split], raw)
    chars = np.frombuffer(raw, dtype=np.uint8)
    bits = chars[(chars == ord("0")) | (chars == ord("1"))] - ord("0")
    rows = _BINARIZED_ROWS[split]
    if bits.size != rows * 784:
        raise DataError(f"{path} holds {bits.size} values, expected {rows} rows of 784.")
    bits = bits.reshape(rows, 784)
    if os.access(path.parent, os.W_OK):
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npy")
        try:
            np.save(tmp, np.packbits(bits, axis=1))
            os.replace(tmp, cache)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return bits


def _load_binarized_mnist(cfg: DataConfig) -> tuple:
    """Larochelle & Murray's fixed binarization: train = their train (50,000) + valid (10,000)
    concatenated, so the 60,000/10,000 split matches MNIST and Burda et al. (2015); test = test.

    No labels. Files: ``<root>/binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]``.
    The test file is sorted by digit class (its first 1,000 images are zeros), so it is put in
    a fixed shuffled order (``TEST_ORDER_SEED``): then the first N points (``max_test``,
    ``eval.num_test``) are a fair sample, and the whole set gives the same numbers as before.
    """
    folder = default_data_dir(cfg) / "binarized_mnist"
    paths = {}
    for split in ("train", "valid", "test"):
        base = folder / f"binarized_mnist_{split}.amat"
        paths[split] = next((p for p in (base, base.with_name(base.name + ".gz")) if p.is_file()), None)
    missing = [s for s, p in paths.items() if p is None]
    failure = None
    for split in missing if cfg.download else []:
        name = f"binarized_mnist_{split}.amat"
        failure = _download([_BINARIZED_URL + name], folder, name, _BINARIZED_MD5[split])
        if failure:
            break
        paths[split] = folder / name
    if missing and (failure or not cfg.download):
        names = [f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]
        raise _missing_files_error("Binarized MNIST (plain .amat or gzipped .amat.gz)", folder, names,
                                   cfg.download, failure, _BINARIZED_URL)
    train = np.concatenate([_read_amat(paths["train"], "train"), _read_amat(paths["valid"], "valid")])
    test = _read_amat(paths["test"], "test")
    test = test[np.random.default_rng(TEST_ORDER_SEED).permutation(len(test))]
    return train.astype(np.float32), test.astype(np.float32), None, None, (1, 28, 28), 0


# --- your own arrays -------------------------------------------------------------------------

def _npz_image_shape(x: np.ndarray, path: Path) -> tuple[int, ...]:
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        return (1, side, side) if side * side == x.shape[1] else (1, 1, x.shape[1])
    if x.ndim == 3:
        return (1, *x.shape[1:])
    if x.ndim == 4:
        if x.shape[1] > 4 and x.shape[3] in (1, 3, 4):
            raise DataError(f"{path}: 'x' has shape {x.shape}, which looks channels-last (N, H, W, C); "
                            "save it as (N, C, H, W), e.g. np.savez(path, x=x.transpose(0, 3, 1, 2)).")
        return tuple(x.shape[1:])
    raise DataError(f"{path}: 'x' has shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W).")


def _scale_npz(x: np.ndarray, how: str, path: Path) -> np.ndarray:
    """Bring pixel values into [0, 1]; refuse to guess when the data do not look like images."""
    lo, hi = (float(x.min()), float(x.max()))
    if how == "255":
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: 'x' ranges over [{lo:g}, {hi:g}], not 0..255, so data.scale = '255' "
                            "does not fit; rescale the data to [0, 1] and set data.scale = 'none'.")
        return x.astype(np.float32) / 255.0
    if 0 <= lo and hi <= 1:
        return x.astype(np.float32)
    looks_uint8 = lo >= 0 and hi <= 255 and (x.dtype == np.uint8 or bool(np.all(x == np.round(x))))
    if how == "auto" and looks_uint8:
        return x.astype(np.float32) / 255.0
    fix = ("set data.scale = '255' to divide by 255, or rescale the data to [0, 1]" if how == "none"
           else "rescale the data to [0, 1] (or set data.scale = '255' if they are 0..255 pixels)")
    raise DataError(f"{path}: 'x' ranges over [{lo:g}, {hi:g}], outside [0, 1] (data.scale = {how!r}); {fix}.")


def _load_npz(cfg: DataConfig) -> tuple:
    """Your own images: ``cfg.path`` is an ``.npz`` with ``x`` (N, D), (N, H, W) or (N, C, H, W) and optional
    integer labels ``y`` (N,); split at random by ``test_fraction``."""
    if not cfg.path:
        raise DataError("data.name = 'npz' needs data.path: the .npz file with array 'x' (and optional 'y').")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path {str(path)!r} does not exist (looked in {path.resolve().parent}); "
                        "point data.path at your .npz file.")
    save_hint = "save it with np.savez(path, x=images[, y=labels])"
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"Cannot read {path} as .npz ({type(e).__name__}: {e}); {save_hint}.") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is a single .npy array; {save_hint}.")
    with f:
        if "x" not in f.files:
            raise DataError(f"{path} has no array named 'x' (it has: {', '.join(f.files) or 'none'}); {save_hint}.")
        try:
            x = f["x"]
            y = f["y"] if "y" in f.files else None
        except Exception as e:
            raise DataError(f"Cannot read arrays from {path} ({type(e).__name__}: {e}); {save_hint}.") from e
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{path}: 'x' has dtype {x.dtype}; it must hold real numbers (pixel values).")
    shape = _npz_image_shape(x, path)
    if len(x) < 2:
        raise DataError(f"{path}: 'x' holds {len(x)} image(s); at least 2 are needed for a train/test split.")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: 'x' contains NaN or infinite values; clean the data first.")
    x = _scale_npz(x, cfg.scale, path).reshape(len(x), -1)
    num_classes = 0
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: 'y' has shape {y.shape} but 'x' has {len(x)} images; "
                            "'y' must be one label per image, shape (N,).")
        if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.isfinite(y))
                                               and np.all(y == np.round(y))):
            raise DataError(f"{path}: 'y' has non-integer labels (dtype {y.dtype}); "
                            "map them to integers 0..K-1, or drop 'y'.")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise DataError(f"{path}: 'y' has negative labels; map them to integers 0..K-1.")
        num_classes = int(y.max()) + 1
    return (*_split(x, y, cfg.test_fraction, cfg.seed), shape, num_classes)


_LOADERS = {
    "digits": _load_digits,
    "mnist": _load_mnist_like,
    "fashion_mnist": _load_mnist_like,
    "frey_face": _load_frey_face,
    "binarized_mnist": _load_binarized_mnist,
    "npz": _load_npz,
}


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
