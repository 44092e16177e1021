"""Dataset loaders: shapes, scaling, binarization, and errors a user can act on.

Tests on the real MNIST / Fashion-MNIST / Frey Face / binarized MNIST files look in
$PPVAE_TEST_DATA or ``../shared/data`` next to the repository, and skip when absent.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ppvae.data.files as data_mod
from ppvae.data import load_dataset
from ppvae.data.files import cache_file, cache_root
from ppvae.errors import ConfigError, DataError

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _real_data_dir() -> Path:
    env = os.environ.get("PPVAE_TEST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"  # beside the repository


def _need(*parts: str) -> Path:
    """The real data folder, or skip: these files are large and not part of the repository."""
    root = _real_data_dir()
    if not (root / Path(*parts)).exists():
        pytest.skip(f"real data file {Path(*parts)} not found under {root} (set $PPVAE_TEST_DATA to run this)")
    return root


# --- digits and binarization -----------------------------------------------------------------

def test_digits_shapes_range_labels():
    d = load_dataset(dict(name="digits"))
    assert d.train_x.shape[1] == d.test_x.shape[1] == 64
    assert d.train_x.shape[0] + d.test_x.shape[0] == 1797
    assert d.image_shape == (1, 8, 8) and d.num_classes == 10
    assert d.train_x.dtype == torch.float32
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1 and d.train_x.max() > 0.9
    assert d.train_y.dtype == torch.int64 and len(d.train_y) == len(d.train_x)
    assert set(d.train_y.tolist()) == set(range(10))
    assert not d.binary


def test_max_train_and_max_test():
    d = load_dataset(dict(name="digits", max_train=100, max_test=30))
    assert d.train_x.shape == (100, 64) and d.test_x.shape == (30, 64)
    assert len(d.train_y) == 100 and len(d.test_y) == 30


def test_threshold_binarization():
    grey = load_dataset(dict(name="digits"))
    d = load_dataset(dict(name="digits", binarize="threshold"))
    for x, g in ((d.train_x, grey.train_x), (d.test_x, grey.test_x)):
        assert set(x.unique().tolist()) == {0.0, 1.0} and torch.equal(x, (g > 0.5).float())
    assert d.binary
    nonzero = load_dataset(dict(name="digits", binarize="threshold", threshold=0.0))  # the extensions study's own
    assert torch.equal(nonzero.train_x, (grey.train_x > 0).float()) and nonzero.train_x.mean() > d.train_x.mean()
    with pytest.warns(UserWarning, match="data.threshold = 0 is ignored.*'dynamic'"):
        load_dataset(dict(name="digits", binarize="dynamic", threshold=0.0))


def test_static_binarization_depends_only_on_seed():
    a = load_dataset(dict(name="digits", binarize="static", seed=3))
    b = load_dataset(dict(name="digits", binarize="static", seed=3))
    c = load_dataset(dict(name="digits", binarize="static", seed=4))
    assert set(a.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)


def test_dynamic_binarization_fresh_draws_per_epoch_fixed_test_set():
    cfg = dict(name="digits", binarize="dynamic")
    d = load_dataset(cfg)
    assert len(d.train_x.unique()) > 2  # grey levels are kept for training
    assert d.binary
    g = torch.Generator().manual_seed(0)
    epochs = [torch.cat([x for x, _ in d.batches(256, generator=g, shuffle=False)]) for _ in range(2)]
    for x in epochs:
        assert x.shape == d.train_x.shape
        assert set(x.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epochs[0], epochs[1])
    # the same pixels on average: draws follow the grey levels
    assert abs(epochs[0].mean().item() - d.train_x.mean().item()) < 0.01
    assert set(d.test_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(d.test_x, load_dataset(cfg).test_x)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="data.name = 'cifar' is not one of 'binarized_mnist', .*'digits'.*"
                                          "Did you mean 'cifar10'"):
        load_dataset(dict(name="cifar"))


# --- npz -------------------------------------------------------------------------------------

def _npz(tmp_path: Path, **arrays) -> dict:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return dict(name="npz", path=str(path), test_fraction=0.25)


def test_npz_uint8_images_are_scaled_by_255(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    x[0, 0, 0] = 255
    d = load_dataset(_npz(tmp_path, x=x, y=np.arange(40) % 3))
    assert d.image_shape == (1, 6, 5)
    assert d.train_x.shape == (30, 30) and d.test_x.shape == (10, 30)
    assert d.num_classes == 3 and d.train_y.dtype == torch.int64
    allx = torch.cat([d.train_x, d.test_x])
    assert allx.max() == 1.0 and allx.min() >= 0
    assert sorted((allx * 255).round().flatten().tolist()) == sorted(x.astype(np.float32).flatten().tolist())


def test_npz_float_in_unit_interval_kept_and_channels(tmp_path):
    x = np.random.default_rng(0).random((20, 3, 4, 4)).astype(np.float64)
    d = load_dataset(_npz(tmp_path, x=x))
    assert d.image_shape == (3, 4, 4) and d.x_dim == 48
    assert d.train_y is None and d.num_classes == 0
    allx = torch.cat([d.train_x, d.test_x]).double()
    assert torch.allclose(allx.sort(0).values, torch.as_tensor(x.reshape(20, -1)).sort(0).values, atol=1e-6)


def test_npz_flat_arrays(tmp_path):
    d = load_dataset(_npz(tmp_path, x=np.zeros((8, 16), np.float32)))
    assert d.image_shape == (1, 4, 4)
    d = load_dataset(_npz(tmp_path, x=np.zeros((8, 10), np.float32)))
    assert d.image_shape == (1, 1, 10)


def test_npz_integer_valued_floats_0_255_and_explicit_scale(tmp_path):
    x = np.full((10, 2, 2), 51.0)
    assert load_dataset(_npz(tmp_path, x=x)).train_x.max().item() == pytest.approx(0.2)
    cfg = _npz(tmp_path, x=np.full((10, 4), 0.5))
    cfg["scale"] = "255"
    assert load_dataset(cfg).train_x.max().item() == pytest.approx(0.5 / 255)


@pytest.mark.parametrize("arrays, scale, message", [
    ({"x": np.full((10, 4), 2.5)}, "auto", "data.scale"),
    ({"x": np.full((10, 4), -0.5)}, "auto", "rescale the data to [0, 1]"),
    ({"x": np.full((10, 4), 200, np.uint8)}, "none", "data.scale = '255'"),
    ({"x": np.full((10, 4), 300.0)}, "255", "not 0..255"),
    ({"x": np.array([np.nan] * 40).reshape(10, 4)}, "auto", "NaN"),
    ({"images": np.zeros((10, 4))}, "auto", "no array named 'x' (it has: images)"),
    ({"x": np.zeros(10)}, "auto", "expected (N, D), (N, H, W) or (N, C, H, W)"),
    ({"x": np.zeros((2, 3, 4, 5, 6))}, "auto", "expected (N, D)"),
    ({"x": np.zeros((10, 28, 28, 3))}, "auto", "channels-last"),
    ({"x": np.zeros((1, 4))}, "auto", "at least 2"),
    ({"x": np.zeros((10, 4)), "y": np.arange(9)}, "auto", "one label per point"),
    ({"x": np.zeros((10, 4)), "y": np.zeros((10, 2))}, "auto", "one label per point"),
    ({"x": np.zeros((10, 4)), "y": np.linspace(0, 1, 10)}, "auto", "non-integer labels"),
    ({"x": np.zeros((10, 4)), "y": np.array(list("abcdefghij"))}, "auto", "non-integer labels"),
    ({"x": np.zeros((10, 4)), "y": -np.arange(10)}, "auto", "negative labels"),
    ({"x": np.zeros((10, 4)), "y": np.array([0, 10**9] * 5)}, "auto", "more classes than the 10 points"),
    ({"x": np.full((10, 4), -0.5)}, "none", "negative values are not pixel intensities"),
    ({"x": np.array(list("abcdefghij")).reshape(10, 1)}, "auto", "real numbers"),
])
def test_npz_bad_inputs_give_helpful_errors(tmp_path, arrays, scale, message):
    cfg = _npz(tmp_path, **arrays)
    cfg["scale"] = scale
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    assert message in str(e.value)


def test_npz_missing_or_wrong_file(tmp_path):
    with pytest.raises(ConfigError, match="needs data.path"):
        load_dataset(dict(name="npz"))
    with pytest.raises(DataError, match="does not exist.*point data.path"):
        load_dataset(dict(name="npz", path=str(tmp_path / "nope.npz")))
    np.save(tmp_path / "one.npy", np.zeros((4, 4)))
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(dict(name="npz", path=str(tmp_path / "one.npy")))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="is not an .npz file .*starts with b'not a '.*np.savez"):
        load_dataset(dict(name="npz", path=str(tmp_path / "junk.npz")))
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(DataError, match="Cannot read .*np.savez"):
        load_dataset(dict(name="npz", path=str(tmp_path / "cut.npz")))


@pytest.mark.parametrize("count, cut, message", [(9, 0, "holds 9 images, not the 10 of this split"),
                                                 (10, 5, "is truncated: 7851 bytes of the 7856 its header promises")])
def test_an_idx_file_with_the_wrong_count_or_cut_short_says_which(tmp_path, count, cut, message):
    from ppvae.data.mnist import IMAGES, read_idx

    raw = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28)) + bytes(count * 784)
    (tmp_path / "images-idx3-ubyte").write_bytes(raw[:len(raw) - cut])
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "images-idx3-ubyte", IMAGES, 10)


# --- missing files, downloads that cannot work, corrupted files ------------------------------

@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("name, folder, files", [
    ("mnist", "MNIST/raw", MNIST_FILES),
    ("fashion_mnist", "FashionMNIST/raw", MNIST_FILES),
    ("frey_face", ".", ["frey_rawface.mat"]),
    ("binarized_mnist", "binarized_mnist",
     ["binarized_mnist_train.amat", "binarized_mnist_valid.amat", "binarized_mnist_test.amat"]),
])
def test_missing_files_name_files_and_folder(tmp_path, monkeypatch, name, folder, files, download):
    monkeypatch.setattr(data_mod, "_DOWNLOAD_TIMEOUT_S", 2.0)
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        load_dataset(dict(name=name, data_dir=str(tmp_path), download=download))
    assert time.monotonic() - start < 30
    msg = str(e.value)
    assert f"Put these files in {tmp_path / folder}:" in msg
    for f in files:
        assert f in msg
    assert "data.data_dir" in msg and "$PPVAE_DATA" in msg
    assert ("Downloading them failed" in msg) == download
    assert list(tmp_path.iterdir()) == []  # a failed download leaves no folders behind (a mistyped data_dir)


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match=str(tmp_path / "env" / "frey_rawface.mat")):
        load_dataset(dict(name="frey_face", download=False))


def test_download_from_unresponsive_host_times_out(tmp_path, monkeypatch):
    """A host that accepts but never answers must not hang the run: the socket timeout ends it."""
    import torchvision.datasets

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    conns = []
    stop = threading.Event()

    def accept():  # hold connections open, say nothing
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"])
        monkeypatch.setattr(data_mod, "_DOWNLOAD_TIMEOUT_S", 0.5)
        start = time.monotonic()
        with pytest.raises(DataError, match="Downloading them failed.*timed out"):
            load_dataset(dict(name="mnist", data_dir=str(tmp_path), download=True))
        assert time.monotonic() - start < 10
        assert socket.getdefaulttimeout() is None  # restored
        assert not (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        server.close()


def test_checksum_mismatch_on_fabricated_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        (raw / f).write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(DataError) as e:
        load_dataset(dict(name="mnist", data_dir=str(tmp_path), download=False))
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz is truncated or corrupted" in msg
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg and "Delete it and download it again" in msg


def test_frey_checksum_mismatch(tmp_path):
    (tmp_path / "frey_rawface.mat").write_bytes(b"MATLAB 5.0 but not really")
    with pytest.raises(DataError, match="frey_rawface.mat is truncated or corrupted"):
        load_dataset(dict(name="frey_face", data_dir=str(tmp_path), download=True))


def test_binarized_mnist_checksum_mismatch(tmp_path):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").write_text("0 1 0\n")
    with pytest.raises(DataError, match="binarized_mnist_train.amat is truncated or corrupted"):
        load_dataset(dict(name="binarized_mnist", data_dir=str(tmp_path)))


# --- real files ------------------------------------------------------------------------------

def test_real_mnist_truncated_copy_fails_checksum(tmp_path):
    root = _need("MNIST", "raw", "t10k-labels-idx1-ubyte.gz")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        src = root / "MNIST" / "raw" / f
        (raw / f).write_bytes(src.read_bytes()[: 1000 if f == "t10k-labels-idx1-ubyte.gz" else None])
    with pytest.raises(DataError) as e:
        load_dataset(dict(name="mnist", data_dir=str(tmp_path), download=True))
    assert f"{raw / 't10k-labels-idx1-ubyte.gz'} is truncated or corrupted" in str(e.value)
    assert "ec29112dd5afa0611ce80d1b7f02629c" in str(e.value)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_real_mnist_and_fashion(name, folder):
    root = _need(folder, "raw", "train-images-idx3-ubyte.gz")
    d = load_dataset(dict(name=name, data_dir=str(root), download=False))
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.image_shape == (1, 28, 28) and d.num_classes == 10
    assert d.train_x.min() == 0 and d.train_x.max() == 1
    assert d.train_y.shape == (60000,) and d.test_y.shape == (10000,)
    assert torch.bincount(d.train_y).tolist() == (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949] if name == "mnist" else [6000] * 10)
    if name == "mnist":  # the official order: the first training digit is a 5, the first test digit a 7
        assert d.train_y[0] == 5 and d.test_y[0] == 7


def test_real_frey_face():
    root = _need("frey_rawface.mat")
    d = load_dataset(dict(name="frey_face", data_dir=str(root), download=False))
    assert d.train_x.shape[0] + d.test_x.shape[0] == 1965
    assert d.test_x.shape[0] == round(0.2 * 1965) and d.x_dim == 560
    assert d.image_shape == (1, 28, 20) and d.train_y is None
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1
    # Upright 28 rows x 20 columns: neighbouring pixels, across and down, are alike; reading the
    # flat image as 20x28, or in column-major order, pairs up unrelated pixels (~1.8x the change).
    def roughness(imgs: torch.Tensor) -> float:
        return ((imgs[:, 1:, :] - imgs[:, :-1, :]).abs().mean() + (imgs[:, :, 1:] - imgs[:, :, :-1]).abs().mean()).item()

    right = roughness(d.train_x.reshape(-1, 28, 20))
    assert right < 0.7 * roughness(d.train_x.reshape(-1, 20, 28))
    assert right < 0.7 * roughness(torch.as_tensor(d.train_x.numpy().reshape(-1, 28, 20, order="F")))


def test_real_binarized_mnist():
    root = _need("binarized_mnist")
    d = load_dataset(dict(name="binarized_mnist", data_dir=str(root), download=False))
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.image_shape == (1, 28, 28) and d.train_y is None
    for x in (d.train_x, d.test_x):
        assert bool(((x == 0) | (x == 1)).all())
    assert d.binary
    assert 0.1 < d.train_x.mean() < 0.2  # about 13% of MNIST pixels are on
    # the file is sorted by class; the loader's fixed shuffle makes a prefix (max_test) a fair sample:
    # the mean image of the first 500 is as close to the whole set's as a random 500 (sorted: ~19)
    assert ((d.test_x[:500].mean(0) - d.test_x.mean(0)) ** 2).sum() < 0.5


def test_binary_images_get_the_label_of_the_grey_image_that_drew_them():
    from ppvae.data.binarized_mnist import matched_labels

    g = np.random.default_rng(0)
    grey = g.beta(0.3, 0.3, size=(300, 784)).astype(np.float32)  # MNIST-like: most pixels near 0 or 1
    labels = g.integers(0, 10, 300)
    order = g.permutation(300)
    bits = (g.random((300, 784)) < grey[order]).astype(np.uint8)  # one draw each, reordered like the .amat files
    assert np.array_equal(matched_labels(bits, grey, labels, block=64), labels[order])


def test_real_binarized_mnist_labels():
    from ppvae.data.binarized_mnist import TEST_ORDER_SEED

    root = _need("binarized_mnist")
    _need("MNIST", "raw", "train-labels-idx1-ubyte.gz")
    d = load_dataset(dict(name="binarized_mnist", data_dir=str(root), download=False, labels=True))
    assert d.num_classes == 10 and d.train_x.shape == (60000, 784)
    assert torch.bincount(d.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    in_file_order = torch.empty_like(d.test_y)
    in_file_order[torch.as_tensor(np.random.default_rng(TEST_ORDER_SEED).permutation(10000))] = d.test_y
    # the test file is MNIST's test set sorted by class: the matched labels must rise in blocks of MNIST's counts
    assert torch.equal(in_file_order, torch.repeat_interleave(torch.arange(10), torch.tensor(
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])))
    plain = load_dataset(dict(name="binarized_mnist", data_dir=str(root), download=False, max_test=500))
    assert torch.equal(plain.test_x, d.test_x[:500]) and plain.test_y is None  # the same images, in the same order
    held = load_dataset(dict(name="binarized_mnist", data_dir=str(root), download=False, labels=True,
                             validation=1))
    assert len(held.train_y) == 50000 and len(held.valid_y) == 10000


def test_real_binarized_mnist_cache_lives_in_the_cache_folder_not_beside_the_data(tmp_path):
    root = _need("binarized_mnist")
    folder = tmp_path / "binarized_mnist"
    shutil.copytree(root / "binarized_mnist", folder, ignore=shutil.ignore_patterns("*.npy"))
    cfg = dict(name="binarized_mnist", data_dir=str(tmp_path), max_train=100, max_test=100)
    first = load_dataset(cfg)
    assert not list(folder.glob("*.npy"))  # the data folder may be shared or read-only: nothing written there
    caches = {s: cache_file(folder / f"binarized_mnist_{s}.amat.gz", f"binarized_mnist_{s}.packed.npy")
              for s in ("test", "train", "valid")}
    assert all(c.is_file() and c.parent == cache_root() / "derived" for c in caches.values())
    # The cache is what gets read while it is newer than its source ...
    cache = caches["test"]
    packed = np.load(cache)
    packed[:] = 255
    np.save(cache, packed)
    assert load_dataset(cfg).test_x.sum() == 784 * 100
    # ... and is ignored (and rewritten) once the source file changes.
    source = folder / "binarized_mnist_test.amat.gz"
    later = cache.stat().st_mtime + 10
    os.utime(source, (later, later))
    assert torch.equal(load_dataset(cfg).test_x, first.test_x)
