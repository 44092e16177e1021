"""``ppvae compare`` on three short runs (two seeds of one config, one of another), and ``ppvae eval``."""

import csv
import json
import shutil

import pytest

from ppvae import config
from ppvae.cli import main
from ppvae.studies import run as experiment
from ppvae.studies.compare import SEED_IN_NAME, Run, RunFolderError, _run_reference, compare, configurations

TINY = ["train.epochs=2", "eval.k=50", "data.max_train=300", "model.decoder.hidden=[64]",
        "guide.encoder.hidden=[64]"]


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    parent = tmp_path_factory.mktemp("runs")
    variants = [["train.seed=0"], ["train.seed=1"], ["estimator.name=iwae"]]
    return [experiment.run(config.load("quickstart", TINY + v), out=parent) for v in variants]


def test_compare_writes_tables_and_every_figure(three_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, three_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Runs" in printed and "R-hat" in printed
    for name in ("runs.csv", "configs.csv", "comparison.md", "forest_test_nll.png", "khat.png",
                 "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 3 and [r["seed"] for r in rows] == ["0", "1", "0"]
    assert all(float(r["test_nll"]) > 0 and r["khat_share_above_0_7"] != "" for r in rows)
    configs = list(csv.DictReader(open(out / "configs.csv")))
    assert [c["config"] for c in configs] == ["estimator.name=trace", "estimator.name=iwae"]
    two_seeds, one_seed = configs
    assert two_seeds["seeds"] == "2" and float(two_seeds["test_nll R-hat"]) >= 0.99
    assert 0 < float(two_seeds["test_nll ESS"]) <= 2 * 400  # two chains of 400 bootstrap draws
    assert one_seed["test_nll R-hat"] in ("", "nan")  # R-hat needs two chains
    report = (out / "comparison.md").read_text()
    assert all(f"]({name})" in report for name in ("forest_test_nll.png", "khat.png", "training_curves.png"))


def test_compare_expands_a_folder_of_runs_and_defaults_the_output_folder(three_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, tables = compare([three_runs[0].parent])
    assert out.parent.name == "runs" and out.name.startswith("compare-")
    assert tables.count("| estimator.") == 3 + 2 + 2  # runs, configurations, chains


def test_compare_says_what_to_do_with_an_unevaluated_folder(three_runs, tmp_path):
    run = shutil.copytree(three_runs[0], tmp_path / "old")
    (run / "pointwise.npz").unlink()
    with pytest.raises(RunFolderError, match="ppvae eval"):
        compare([run], tmp_path / "cmp")
    with pytest.raises(RunFolderError, match="not a run folder"):
        compare([tmp_path / "nothing"], tmp_path / "cmp")


def test_eval_reevaluates_with_eval_overrides_only(three_runs, tmp_path, capsys):
    run = shutil.copytree(three_runs[0], tmp_path / "run")
    assert main(["eval", str(run), "eval.num_test=40", "--k", "30"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_k"] == 30 and metrics["eval_points"] == 40
    assert "khat_share_above_0_7" in capsys.readouterr().out
    assert main(["eval", str(run), "train.epochs=3"]) == 2
    assert "eval.* settings only" in capsys.readouterr().err


def test_an_evaluation_is_a_record_of_its_own_and_compare_never_pools_different_ones(three_runs, tmp_path):
    """Re-evaluating at another k keeps the first record, keeps the training time, names what metrics.json shows;
    compare then treats the two seeds, evaluated differently, as two configurations, with an eval k column."""
    seed0, seed1 = (shutil.copytree(r, tmp_path / r.name) for r in three_runs[:2])
    first = json.loads((seed0 / "metrics.json").read_text())
    assert main(["eval", str(seed0), "--k", "30"]) == 0
    shown = json.loads((seed0 / "metrics.json").read_text())
    records = sorted(p.name for p in (seed0 / "evaluations").iterdir())
    assert records == sorted([f"{first['evaluation']}.json", f"{shown['evaluation']}.json"])
    assert shown["evaluation"].startswith("k30-n") and first["evaluation"].startswith("k50-n")
    kept = json.loads((seed0 / "evaluations" / f"{first['evaluation']}.json").read_text())
    assert kept["test_ll"] == first["test_ll"]
    assert shown["train_seconds_this_session"] == first["train_seconds_this_session"]
    _, text = compare([seed0, seed1], tmp_path / "cmp")
    assert "eval.k=30" in text and "eval.k=50" in text  # two groups of one seed each, not one of two
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "runs.csv")))
    assert sorted(r["eval_k"] for r in rows) == ["30", "50"]


def test_a_run_evaluated_before_records_existed_keeps_its_evaluation_when_reevaluated(three_runs, tmp_path):
    old = shutil.copytree(three_runs[2], tmp_path / "old")
    shutil.rmtree(old / "evaluations")
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["evaluation"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert main(["eval", str(old), "--k", "30"]) == 0
    kept = json.loads((old / "evaluations" / f"{experiment.evaluation_key(metrics)}.json").read_text())
    assert kept["test_ll"] == metrics["test_ll"] and kept["eval_k"] == 50


def _run(path, seed, study_label=None, **config):
    return Run(path, {"train.seed": seed, **config}, {}, [], {}, study_label)


def test_configurations_keep_every_run_when_groups_differ_only_in_a_parts_parameters(tmp_path):
    """bayesian vs bayesian started from a run: both 'model.weights.name=bayesian' once the part's
    parameters are left out, so the labels must say more, not drop one group's seeds."""
    a = [_run(tmp_path / f"a{s}", s, **{"model.weights.name": "bayesian", "model.weights.init": None})
         for s in range(2)]
    b = [_run(tmp_path / f"b{s}", s, **{"model.weights.name": "bayesian", "model.weights.init": "run normal"})
         for s in range(2)]
    c = [_run(tmp_path / "c0", 0, **{"model.weights.name": "point", "model.weights.init": None})]
    groups = configurations(a + b + c)
    assert sorted(len(g) for g in groups.values()) == [1, 2, 2]
    assert len(groups) == 3 and any("init=run normal" in label for label in groups)


def test_runs_started_from_each_seeds_own_run_pool_as_one_configuration(tmp_path):
    def base(study, seed, epochs=15):
        folder = tmp_path / study / f"{study}-normal__seed_{seed}"
        folder.mkdir(parents=True)
        config = {"name": f"{study}-normal, seed={seed}", "train": {"seed": seed, "epochs": epochs}}
        (folder / "config.json").write_text(json.dumps(config))
        return str(folder)

    here = tmp_path / "s" / "s-map__seed_0"
    refs = {_run_reference(base("s", seed), here) for seed in (0, 1)}
    assert len(refs) == 1 and refs.pop().startswith("run s-normal (")
    # a base run of another config (another study's 'normal', 30 epochs) is another reference
    assert _run_reference(base("t", 0, epochs=30), here) != _run_reference(str(tmp_path / "s/s-normal__seed_0"), here)
    # a study folder copied elsewhere: the base run is found beside the run that names it
    moved = tmp_path / "moved"
    (tmp_path / "s").rename(moved)
    assert _run_reference(str(tmp_path / "s/s-normal__seed_1"), moved / "s-map__seed_1").startswith("run s-normal (")
    assert _run_reference(str(tmp_path / "not-a-run"), here) == str(tmp_path / "not-a-run")
    # only the seed a study appends leaves a name
    assert SEED_IN_NAME.sub("", "s-reseed_3, data.seed=2, seed=1") == "s-reseed_3, data.seed=2"


def test_configurations_take_the_names_the_study_gave_them(tmp_path):
    runs = [_run(tmp_path / f"{name}{s}", s, name, **{"model.prior.name": prior})
            for name, prior in (("vamp", "vamp"), ("standard", "normal")) for s in range(2)]
    assert {k: len(v) for k, v in configurations(runs).items()} == {"vamp": 2, "standard": 2}
    runs[0].study_label = None  # one run from outside the study: the labels say the keys again
    assert set(configurations(runs)) == {"model.prior.name=vamp", "model.prior.name=normal"}


def test_configurations_never_share_a_label(tmp_path):
    """Configs apart only in a value's type, or in a key one of them lacks, still get a row each."""
    for a, b in (({"x": 1}, {"x": "1"}), ({"x": None}, {})):
        groups = configurations([_run(tmp_path / "a", 0, **a), _run(tmp_path / "b", 0, **b)])
        assert sorted(len(g) for g in groups.values()) == [1, 1], (a, b)
