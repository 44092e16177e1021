"""Run folders written by ppvae 0.1 (flat config keys) still evaluate and resume.

``tests/fixtures/v0_runs`` holds two tiny runs written by 0.1.0 before the registry: a Beta prior
with a Kumaraswamy guide (``model.prior_a``) and a fixed-sigma Gaussian with a low-rank guide
trained by IWAE (``model.sigma``, ``guide.rank``, ``estimator.k``).
"""

import json
import logging
import shutil
from pathlib import Path

import pytest

from ppvae import runs
from ppvae.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0_runs"
NAMES = sorted(p.name for p in FIXTURES.iterdir())


@pytest.fixture(params=NAMES)
def old_run(request, tmp_path) -> Path:
    folder = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, folder)
    return folder


def test_eval_of_an_old_run_reproduces_its_numbers(old_run, caplog):
    before = json.loads((old_run / runs.METRICS).read_text())
    with caplog.at_level(logging.WARNING):
        assert main(["eval", str(old_run)]) == 0
    assert any("ppvae 0.1's flat keys" in r.message for r in caplog.records)  # the one-line notice
    after = json.loads((old_run / runs.METRICS).read_text())
    # test_ll_k5 (extra_k) is left out: it now draws from its own seed, 0.1 continued the evaluation's stream
    for key in ("test_ll", "test_elbo", "test_kl", "test_recon_mse", "khat_median", "eval_seed"):
        assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-6), key
    assert "test_ll_k5" in after or "test_ll_k5" not in before


def test_resume_of_an_old_run_trains_on_and_writes_the_new_format(old_run):
    assert main(["run", "--resume", str(old_run), "train.epochs=2"]) == 0
    history = runs.read_jsonl(old_run / runs.EPOCHS)
    assert [h["epoch"] for h in history] == [1, 2]
    config = json.loads((old_run / runs.CONFIG).read_text())
    assert "prior_a" not in config["model"] and isinstance(config["model"]["prior"], dict)
    assert json.loads((old_run / runs.METRICS).read_text())["epochs"] == 2
