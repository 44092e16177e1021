"""Studies: a [study] table runs a grid of variants and writes one results table."""

import csv
import json
import math

import pytest

from ppvae import config
from ppvae.cli import main
from ppvae.config import bundled_experiments
from ppvae.errors import ConfigError
from ppvae.studies import study

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
    # an override may follow the options
    assert main(["run", str(path), "--scale", "smoke", "--out", str(tmp_path / "out"), "train.seed=3"]) == 0
    (folder,) = (tmp_path / "out").iterdir()
    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert [r["run"] for r in rows] == ["vae, model.latent_dim=2", "ae, model.latent_dim=2",
                                        "vae, model.latent_dim=3", "ae, model.latent_dim=3"]
    assert all(float(r["test_recon_mse"]) < 1 for r in rows)
    assert (folder / "results.md").read_text().count("\n| ") == 2 + 4  # header, rule, four runs
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert runs == ["tiny-ae__model.latent_dim_2", "tiny-ae__model.latent_dim_3", "tiny-vae__model.latent_dim_2",
                    "tiny-vae__model.latent_dim_3"]  # fixed names: the same command again finds them
    assert json.loads((folder / runs[0] / "config.json").read_text())["train"]["seed"] == 3
    assert "point mass" in (folder / runs[0] / "report.md").read_text()  # the autoencoder's test_ll is no bound


def test_study_validates_every_variant_before_running(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(STUDY.replace('ae = ["guide.family=delta"]', 'ae = ["guide.family=deltaa"]'))
    with pytest.raises(ConfigError, match="Did you mean 'delta'"):
        study.plan(study.read(str(path)), "smoke")
    with pytest.raises(ConfigError, match="no scale 'full'"):
        study.plan(study.read(str(path)), "full")


def test_study_runs_only_the_chosen_variants(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    s = study.read(str(path))
    assert [p.label for p in study.plan(s, "smoke", variants=["ae"])] == [
        "ae, model.latent_dim=2", "ae, model.latent_dim=3"]
    with pytest.raises(ConfigError, match="no variant.*'vea'.*choose from vae, ae"):
        study.plan(s, "smoke", variants=["vea"])
    assert main(["run", "quickstart", "--variants", "ae"]) == 2
    assert "single run" in capsys.readouterr().err


def test_seeds_run_each_configuration_several_times_and_give_error_bars(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY.replace('vary = { "model.latent_dim" = [2, 3] }', ""))
    planned = study.plan(study.read(str(path)), "smoke", seeds=[4, 5])
    assert [(p.label, p.config, p.cfg.train.seed) for p in planned] == [
        ("vae, seed=4", "vae", 4), ("vae, seed=5", "vae", 5), ("ae, seed=4", "ae", 4), ("ae, seed=5", "ae", 5)]
    assert main(["run", str(path), "--scale", "smoke", "--seeds", "4,5", "--out", str(tmp_path / "out")]) == 0
    (folder,) = (tmp_path / "out").iterdir()
    per_run = {r["run"]: float(r["test_elbo"]) for r in csv.DictReader(open(folder / "results.csv"))}
    summary = {r["configuration"]: r for r in csv.DictReader(open(folder / "results_seeds.csv"))}
    assert set(summary) == {"vae", "ae"} and summary["vae"]["seeds"] == "2"
    vae = [per_run["vae, seed=4"], per_run["vae, seed=5"]]
    assert float(summary["vae"]["test_elbo_mean"]) == pytest.approx(sum(vae) / 2)
    assert float(summary["vae"]["test_elbo_sd"]) == pytest.approx(abs(vae[0] - vae[1]) / math.sqrt(2))
    assert "## Across seeds" in (folder / "results.md").read_text()
    for bad in ("1,1", "a", "-1"):
        assert main(["run", str(path), "--seeds", bad, "--out", str(tmp_path / "bad")]) == 2
        assert "must be distinct integers" in capsys.readouterr().err
    assert main(["run", "quickstart", "--seeds", "1"]) == 2
    assert "single run, not a study; drop --seeds" in capsys.readouterr().err


def test_one_seed_adds_no_summary(tmp_path):
    assert study.across_seeds(tmp_path, [{"run": "a", "config": "a", "x": 1.0}], ["x"]) == ""
    assert not (tmp_path / "results_seeds.csv").exists()


BUNDLED_STUDIES = [name for name in bundled_experiments() if study.read(name) is not None]


def test_bundled_studies_validate_at_every_scale():
    assert len(BUNDLED_STUDIES) >= 8
    for name in BUNDLED_STUDIES:
        s = study.read(name)
        assert {"smoke", "full"} <= set(s.scales), name
        for scale in s.scales:
            assert study.plan(s, scale), (name, scale)


@pytest.mark.parametrize("name", BUNDLED_STUDIES)
def test_bundled_study_smoke_scale(name, study_smoke):
    folder = study_smoke(name)
    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert rows and (folder / "results.md").is_file() and (folder / "curves.png").is_file()
    for row in rows:
        for key, value in row.items():
            if value == "" and any(r[key] for r in rows):
                continue  # a metric only some variants report (a conditional pair's test_nll_marginal)
            if key.startswith("test_") or key == "final_train_loss":
                assert math.isfinite(float(value)) and abs(float(value)) < 1e4, (key, value)
    if len(study._scale(study.read(name), "smoke")[1]) == 2:
        assert (folder / "heatmap_test_elbo.png").is_file()


def test_curve_labels_name_the_training_objective():
    """An IWAE run's train curve is its k-sample bound, a beta-VAE's its beta-weighted one: the legend says so."""
    label = lambda *o: study._objective(config.load("quickstart", list(o)))  # noqa: E731
    assert label() == "ELBO"
    assert label("estimator.name=iwae", "estimator.k=50") == "IWAE k=50"
    assert label("estimator.beta=4") == "ELBO, beta=4"


def test_heatmap_axes_follow_the_values_order():
    assert study._ordered({100, 20, 60}) == [20, 60, 100]  # not "100" < "20" as text
    assert study._ordered({(500, 500), (500,)}) == [(500,), (500, 500)]
    assert study._ordered({"relu", 3}) == [3, "relu"]
