"""A pair written from scratch (the README's example) works with every estimator."""

import json
import math
import re
from pathlib import Path

import pytest

from ppvae import config, experiment

README = Path(__file__).resolve().parents[1] / "README.md"

ESTIMATORS = [
    ["estimator.name=trace", "estimator.num_particles=2"],
    ["estimator.name=meanfield"],
    ["estimator.name=renyi", "estimator.alpha=0.5", "estimator.num_particles=3"],
    ["estimator.name=iwae", "estimator.k=5", "estimator.gradient=standard"],
    ["estimator.name=iwae", "estimator.k=5", "estimator.gradient=stl"],
    ["estimator.name=iwae", "estimator.k=5", "estimator.gradient=dreg"],
]


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    """The README's pair, written to its own file, exactly as a user would."""
    text = README.read_text()
    block = re.search(r"<!-- user-pair.*?-->\s*```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) < 40
    path = tmp_path_factory.mktemp("user") / "my_pair.py"
    path.write_text(block)
    return path


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: "-".join(v.split("=")[1] for v in e[:1] + e[2:]))
def test_user_pair_trains_evaluates_and_plots(pair_file, estimator, tmp_path):
    cfg = config.load("quickstart", [f"model.pair={pair_file}:make_pair", "train.epochs=2", "eval.k=20",
                                     "data.max_train=300", *estimator])
    run_dir = experiment.run(cfg, out=tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("test_ll", "test_elbo", "test_kl", "test_recon_mse"))
    assert 0 < metrics["test_nll"] < 64 * math.log(2) * 1.5
    for fig in ("reconstructions.png", "samples.png", "elbo.png", "latent.png", "manifold.png"):
        assert (run_dir / fig).stat().st_size > 0
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"] + 5
