"""Studies: a [study] table runs a grid of variants and writes one results table."""

import csv

import pytest

from ppvae import study
from ppvae.cli import main
from ppvae.errors import ConfigError

STUDY = """
description = "tiny"
[data]
name = "digits"
binarize = "dynamic"
max_train = 100
[model]
decoder = { hidden = [16] }
[guide]
encoder = { hidden = [16] }
[train]
epochs = 1
[eval]
k = 4
[study]
vary = { "model.latent_dim" = [2, 3] }
variants = { vae = [], ae = ["guide.family=delta"] }
columns = ["test_recon_mse", "test_elbo"]
[study.scales]
smoke = ["train.batch_size=50"]
"""


def test_study_runs_every_variant_and_tabulates(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    assert main(["run", str(path), "--scale", "smoke", "--out", str(tmp_path / "out")]) == 0
    (folder,) = (tmp_path / "out").iterdir()
    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert [r["run"] for r in rows] == ["vae, model.latent_dim=2", "ae, model.latent_dim=2",
                                        "vae, model.latent_dim=3", "ae, model.latent_dim=3"]
    assert all(float(r["test_recon_mse"]) < 1 for r in rows)
    assert (folder / "results.md").read_text().count("\n| ") == 2 + 4  # header, rule, four runs
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert len(runs) == 4 and runs[0].startswith("tiny-ae_model.latent_dim=2-")


def test_study_validates_every_variant_before_running(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(STUDY.replace('ae = ["guide.family=delta"]', 'ae = ["guide.family=deltaa"]'))
    with pytest.raises(ConfigError, match="Did you mean 'delta'"):
        study.configs(study.read(str(path)), "smoke")
    with pytest.raises(ConfigError, match="no scale 'full'"):
        study.configs(study.read(str(path)), "full")


def test_bundled_studies_have_a_smoke_scale():
    from ppvae.config import bundled_experiments

    for name in bundled_experiments():
        s = study.read(name)
        if s is not None:
            assert "smoke" in s.scales and study.configs(s, "smoke"), name
