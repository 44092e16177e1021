"""Every registered analysis, enabled on a tiny run, adds its metrics, figures and report section, and a
study of such runs gets what it adds across them. The cases come from the registry."""

import json

import pytest

from ppvae import config, registry, runs
from ppvae.analyses import sample_quality
from ppvae.studies import study

# smaller settings than the defaults, so each case takes seconds (an analysis not named here runs as it is)
QUICK = {"sample_quality": {"n": 60, "components": 2}, "gradient_study": {"ks": [1, 2], "repeats": 3, "batch": 8},
         "weight_predictive": {"draws": 4, "k": 5, "points": 20}}
TINY = ["data.max_train=120", "data.max_test=40", "train.epochs=1", "eval.k=25", "model.decoder.hidden=[16]",
        "guide.encoder.hidden=[16]", "train.batch_size=40"]


def study_file(tmp_path, name: str):
    e = registry.entry("analysis", name)
    gaussian = ['likelihood = "gaussian_learned"'] if e.traits["real_valued"] else []
    gaussian += ["conditional = true"] if e.traits["conditional"] else []
    binarize = "none" if e.traits["real_valued"] else "dynamic"
    path = tmp_path / "study.toml"
    path.write_text(f'[data]\nname = "digits"\nbinarize = "{binarize}"\n[model]\n' + "\n".join(gaussian) +
                    f'\n[eval.{name}]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in QUICK.get(name, {}).items()) +
                    '[study]\nvariants = { a = [], b = ["train.seed=1"] }\n')
    return path


@pytest.fixture
def quick_feature_net(monkeypatch):
    monkeypatch.setattr(sample_quality, "feature_net",
                        lambda data, steps=2500, seed=0: sample_quality.train_feature_net(data, steps=100, seed=seed))


@pytest.mark.parametrize("name", registry.names("analysis"))
def test_analysis_adds_to_the_run_and_the_study(name, tmp_path, quick_feature_net):
    folder = study.run(str(study_file(tmp_path, name)), "smoke", TINY, out=tmp_path / "out")
    run_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(run_dirs) == 2
    cls = registry.entry("analysis", name).factory
    for run_dir in run_dirs:
        cfg = config.from_dict(runs.read_json(run_dir / runs.CONFIG))
        assert name in cfg.eval.analyses
        report = (run_dir / runs.REPORT).read_text()
        assert f"## {cls.title}" in report or not cls.title  # an analysis with a title writes a section
        for line in report.splitlines():  # every figure the report links exists
            if line.startswith("!["):
                assert (run_dir / line.split("(")[1].rstrip(")")).stat().st_size > 0
    results = (folder / "results.md").read_text()
    aggregate = cls.aggregate(folder, [])  # with no runs an aggregate has nothing to say
    assert aggregate is None
    if (folder / "analyses.json").is_file():
        assert name in runs.read_json(folder / "analyses.json")
        assert f"## {cls.title or name}" in results
