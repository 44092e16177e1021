"""CIFAR-10, CelebA and image folders through torchvision, on fixtures in their on-disk layouts; training
streamed from disk gives the batches held in memory gives; a missing copy says what to put where."""

from __future__ import annotations

import pytest
import torch
from image_fixtures import celeba, cifar10, image_folder, trust_checksums

import ppvae
from ppvae.data import load_dataset
from ppvae.errors import ConfigError, DataError


def test_cifar10_reads_the_batches_as_written(tmp_path, monkeypatch):
    trust_checksums(monkeypatch)
    written = cifar10(tmp_path)
    data = load_dataset({"name": "cifar10", "data_dir": str(tmp_path), "workers": 0})
    assert data.image_shape == (3, 32, 32) and data.x_dim == 3072 and data.num_classes <= 10
    assert data.train_x.shape[0] == 30 and data.test_x.shape[0] == 6
    assert torch.allclose(data.test_x, torch.as_tensor(written["test_batch"] / 255.0, dtype=torch.float32), atol=1e-6)
    assert torch.equal(data.test_y, torch.as_tensor(written["test_batch_labels"]))
    grey = load_dataset({"name": "cifar10", "data_dir": str(tmp_path), "workers": 0, "grey": True, "size": 16})
    assert grey.image_shape == (1, 16, 16) and grey.x_dim == 256


def test_celeba_partition_crop_and_size(tmp_path, monkeypatch):
    trust_checksums(monkeypatch)
    celeba(tmp_path)
    data = load_dataset({"name": "celeba", "data_dir": str(tmp_path), "workers": 0})
    assert data.image_shape == (3, 64, 64) and data.train_y is None
    assert (data.train_x.shape[0], data.test_x.shape[0], data.valid_x) == (8, 4, None)
    # the 148-pixel center crop sits inside the flat patch: every pixel of a face equals that patch's colour
    faces = data.test_x.reshape(4, 3, 64, 64)
    assert (faces.std(dim=(2, 3)) < 0.02).all()
    valid = load_dataset({"name": "celeba", "data_dir": str(tmp_path), "workers": 0, "validation": 0.1})
    assert valid.valid_x.shape[0] == 3 and valid.train_x.shape[0] == 8  # its own validation part


def test_image_folder_labels_from_sub_folders_or_none(tmp_path):
    image_folder(tmp_path / "pets")
    data = load_dataset({"name": "image_folder", "path": str(tmp_path / "pets"), "size": 16, "workers": 0,
                         "test_fraction": 0.3})
    assert data.image_shape == (3, 16, 16) and data.num_classes == 2
    assert data.train_x.shape[0] + data.test_x.shape[0] == 10 and set(data.train_y.tolist()) == {0, 1}
    # class 1 ("dogs") is brighter than class 0 in the fixture: the labels follow the folders
    x, y = torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])
    assert x[y == 1].mean() > x[y == 0].mean() + 0.2
    image_folder(tmp_path / "flat", classes=())
    flat = load_dataset({"name": "image_folder", "path": str(tmp_path / "flat"), "size": 8, "grey": True,
                         "workers": 0})
    assert flat.train_y is None and flat.image_shape == (1, 8, 8)


@pytest.mark.parametrize("binarize", ["dynamic", "threshold"])
def test_streamed_training_batches_equal_the_ones_held_in_memory(tmp_path, binarize):
    image_folder(tmp_path / "pets", per_class=20)
    spec = {"name": "image_folder", "path": str(tmp_path / "pets"), "size": 8, "binarize": binarize}
    spec |= {"threshold": 0.3} if binarize == "threshold" else {}
    memory = load_dataset(spec | {"workers": 0})
    stream = load_dataset(spec | {"workers": 2, "stream": True, "memory_points": 5})
    assert stream.num_train == memory.num_train == 32 and stream.train_x.shape[0] == 5
    assert torch.equal(stream.train_x, memory.train_x[:5]) and torch.equal(stream.test_x, memory.test_x)
    for seed in (0, 1):
        torch.manual_seed(seed)
        a = list(memory.batches(12, torch.Generator().manual_seed(seed)))
        torch.manual_seed(seed)
        b = list(stream.batches(12, torch.Generator().manual_seed(seed)))
        assert [x.shape[0] for x, _ in b] == [12, 12, 8]
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_a_streamed_celeba_run_with_per_pixel_sigma_draws_its_figures(tmp_path, monkeypatch):
    """The noise-variance study's CelebA figures on the fixture: prior and aggregate-posterior samples
    and the per-pixel uncertainty maps, from a CNN pair trained on a stream."""
    trust_checksums(monkeypatch)
    celeba(tmp_path, partition=(24, 2, 6))
    cfg = {"data": {"name": "celeba", "data_dir": str(tmp_path), "size": 16, "stream": True, "workers": 1},
           "model": {"latent_dim": 4, "likelihood": {"name": "gaussian_perpixel", "stage_one_max_epochs": 1},
                     "decoder": {"name": "cnn", "hidden": [16, 8]}},
           "guide": {"encoder": {"name": "cnn", "hidden": [8, 16]}},
           "estimator": "meanfield", "train": {"epochs": 2, "batch_size": 8}, "eval": {"k": 5}}
    run = ppvae.run(cfg, out=tmp_path / "runs")
    assert run.metrics["epochs"] == 2 and run.metrics["steps"] == 6  # 24 streamed images in batches of 8
    names = {p.name for p in run.folder.glob("*.png")}
    assert {"samples.png", "uncertainty_reconstructions.png", "uncertainty_samples.png"} <= names
    from ppvae.studies.sample import sample_run

    out = sample_run(run.folder, "aggregate", n=16, components=2)
    assert out["grid"].is_file() and out["uncertainty"].is_file()
    assert run.sample(3, source="aggregate", components=2).shape == (3, 3, 16, 16)


def test_missing_copies_name_the_files_and_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 is not under .*cifar-10-batches-py: missing data_batch_1.*"
                                        r"cifar-10-python.tar.gz"):
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"CelebA is not under .*celeba: missing list_attr_celeba.txt.*"
                                        r"img_align_celeba"):
        load_dataset({"name": "celeba", "data_dir": str(tmp_path)})
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset({"name": "image_folder", "path": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset({"name": "image_folder", "path": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="needs data.path"):
        ppvae.config.build({"data": {"name": "image_folder"}})


def test_static_binarization_of_a_stream_is_refused(tmp_path):
    image_folder(tmp_path / "pets")
    with pytest.raises(DataError, match="with data.stream = true use 'dynamic'"):
        load_dataset({"name": "image_folder", "path": str(tmp_path / "pets"), "stream": True, "binarize": "static"})
