"""Real-valued data that are not images: a CSV or an .npz of real numbers, standardized per feature
(the standardization kept in the data and undone for samples and reconstructions), trained with a
Gaussian likelihood, drawn per feature; and the mismatches refused with what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ppvae
from ppvae import config
from ppvae.data import load_dataset
from ppvae.errors import ConfigError, DataError


def measurements(n: int = 300, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Five correlated features on very different scales (a 2-D latent cause), and a label."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mix = np.array([[1.0, 0.5, -2.0, 0.0, 3.0], [0.0, 1.0, 1.0, -1.0, 0.5]])
    x = (z @ mix + 0.1 * rng.normal(size=(n, 5))) * [1.0, 10.0, 0.01, 100.0, 1.0] + [0, 50, -3, 1000, 7]
    return x, (z[:, 0] > 0).astype(int)


def write_csv(path, x, y=None, header=True) -> str:
    names = [f"f{j}" for j in range(x.shape[1])] + (["label"] if y is not None else [])
    rows = [",".join(names)] if header else []
    for i, row in enumerate(x):
        rows.append(",".join([f"{v:.9g}" for v in row] + ([str(y[i])] if y is not None else [])))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_csv_is_standardized_by_the_training_split_and_undone_exactly(tmp_path):
    x, y = measurements()
    data = load_dataset({"name": "csv", "path": write_csv(tmp_path / "m.csv", x, y), "label_column": "label"})
    assert not data.images and data.x_dim == 5 and data.num_classes == 2
    assert torch.allclose(data.train_x.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(data.train_x.std(0), torch.ones(5), atol=1e-5)
    assert data.test_x.abs().max() < 10  # the test split with the training split's statistics
    raw = torch.as_tensor(x, dtype=torch.float32)
    restored = data.original(torch.cat([data.train_x, data.test_x]))
    # every original row comes back (the split is a permutation), to float32 precision of values up to ~1300
    dist = torch.cdist(restored.double(), raw.double()).min(1).values
    assert dist.max() < 1e-3 * raw.abs().max()
    assert set(data.train_y.tolist()) == {0, 1}
    by_index = load_dataset({"name": "csv", "path": str(tmp_path / "m.csv"), "label_column": "5"})
    assert torch.equal(by_index.train_y, data.train_y)
    real = load_dataset({"name": "csv", "path": write_csv(tmp_path / "n.csv", x, header=False), "scale": "real"})
    assert real.shift is None and real.train_x.abs().max() > 1000  # values as stored


def test_npz_of_real_values_standardized(tmp_path):
    x, _ = measurements()
    np.savez(tmp_path / "m.npz", x=x)
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):  # still refused as pixels
        load_dataset({"name": "npz", "path": str(tmp_path / "m.npz")})
    data = load_dataset({"name": "npz", "path": str(tmp_path / "m.npz"), "scale": "standardize"})
    assert not data.images and torch.allclose(data.train_x.std(0), torch.ones(5), atol=1e-5)


def test_a_run_on_a_csv_trains_draws_per_feature_and_speaks_original_units(tmp_path):
    x, y = measurements(600)
    cfg = {"name": "table", "data": {"name": "csv", "path": write_csv(tmp_path / "m.csv", x, y),
                                     "label_column": "label"},
           "model": {"latent_dim": 2, "likelihood": "gaussian_learned", "decoder": {"hidden": [32]}},
           "guide": {"encoder": {"hidden": [32]}}, "train": {"epochs": 60, "batch_size": 64, "lr": 3e-3},
           "eval": {"k": 50}}
    run = ppvae.run(cfg, out=tmp_path / "runs")
    names = {p.name for p in run.folder.glob("*.png")}
    assert {"reconstructions.png", "samples.png", "latent.png", "elbo.png"} <= names and "manifold.png" not in names
    # two latent causes explain five features: the reconstruction error is a small share of each feature's variance
    test = run.data.original(run.data.test_x).cpu()
    recon = run.reconstruct(test)
    explained = 1 - ((recon - test) ** 2).mean(0) / test.var(0)
    assert explained.min() > 0.8, explained
    samples = run.sample(2000)
    assert samples.shape == (2000, 1, 1, 5)
    # prior samples in the data's units: each feature's mean and spread near the data's (not near 0 and 1)
    means, sds = samples.reshape(2000, 5).mean(0), samples.reshape(2000, 5).std(0)
    assert ((means - test.mean(0)).abs() < 0.3 * test.std(0)).all(), (means, test.mean(0))
    assert ((sds / test.std(0) - 1).abs() < 0.3).all(), (sds, test.std(0))


@pytest.mark.parametrize("change, error, message", [
    ({"model": {"likelihood": "bernoulli"}}, ConfigError, "needs binary data"),
    ({"model": {"decoder": "cnn"}}, ConfigError, "not images, which a convolutional network cannot read"),
    ({"eval": {"sample_quality": True}}, ConfigError, "draws or classifies images"),
    ({"data": {"binarize": "dynamic"}}, DataError, "holds real values: set data.binarize = 'none'"),
])
def test_mismatches_with_real_values_are_refused(tmp_path, change, error, message):
    x, y = measurements(40)
    raw = {"data": {"name": "csv", "path": write_csv(tmp_path / "m.csv", x, y), "label_column": "label"},
           "model": {"likelihood": "gaussian_learned"}}
    for section, values in change.items():
        raw[section] = raw.get(section, {}) | values
    with pytest.raises(error, match=message):
        cfg = config.build(raw)
        ppvae.build_pair(cfg, load_dataset(cfg.data))


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n3,x\n", "line 3: 'x' is not a number"),
    ("a,b\n1,2\n3\n", "line 3: 1 fields, but the first row has 2"),
    ("a,b\n1,2\n\n3,\n4,5\n", "line 4: feature 1 is missing"),  # line numbers of the file, blank lines counted
    ("", "is empty"),
    ("a,b\n1,2\n", "holds 1 row"),
])
def test_bad_csv_files_say_where_and_what_to_do(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset({"name": "csv", "path": str(tmp_path / "bad.csv")})


def test_csv_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="needs data.path"):
        config.build({"data": {"name": "csv"}})
    with pytest.raises(ConfigError, match="one character"):
        config.build({"data": {"name": "csv", "path": "x.csv", "delimiter": ";;"}})
    x, y = measurements(20)
    path = write_csv(tmp_path / "m.csv", x, y)
    with pytest.raises(DataError, match="is not a column of .*its columns are 'f0'"):
        load_dataset({"name": "csv", "path": path, "label_column": "class"})
    with pytest.raises(DataError, match="does not exist"):
        load_dataset({"name": "csv", "path": str(tmp_path / "none.csv")})


def test_a_run_keeps_its_standardization_and_refuses_changed_data(tmp_path):
    x, y = measurements(200)
    path = write_csv(tmp_path / "m.csv", x, y)
    cfg = {"data": {"name": "csv", "path": path}, "model": {"likelihood": "gaussian_learned"},
           "train": {"epochs": 1}, "eval": {"k": 5}}
    run = ppvae.run(cfg, out=tmp_path / "runs")
    kept = json.loads((run.folder / "standardization.json").read_text())
    assert np.allclose(kept["mean"], run.data.shift.cpu()) and len(kept["sd"]) == 6  # no label column: 6 features
    assert ppvae.load(run.folder).data.shift is not None  # the same file: it loads
    write_csv(tmp_path / "m.csv", 2 * x, y)
    with pytest.raises(DataError, match="are not the ones it trained on"):
        ppvae.load(run.folder)
