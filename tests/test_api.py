"""The Python API: a whole workflow through ``ppvae.run`` / ``ppvae.load`` and a Run's methods only."""

import json

import pytest
import torch

import ppvae
from ppvae import config
from ppvae.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    return ppvae.run("quickstart", out=out, train={"epochs": 15}, **{"eval.k": 20, "eval.num_test": 60})


def test_run_trains_evaluates_and_opens_the_folder(trained):
    assert (trained.folder / "metrics.json").is_file() and trained.folder.parent.name.startswith("api")
    assert trained.config.train.epochs == 15 and trained.config.eval.k == 20  # both override spellings applied
    assert [h["epoch"] for h in trained.history] == list(range(1, 16))
    m = trained.metrics
    assert m["eval_k"] == 20 and m["eval_points"] == 60 and 0 < m["test_nll"] < 64 * 0.6932


def test_sample_encode_reconstruct_shapes_and_values(trained):
    images = trained.sample(8)
    assert images.shape == (8, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    x = trained.data.test_x[:10].cpu()
    z = trained.encode(x)
    assert z.shape == (10, 2)
    assert torch.equal(trained.encode(x.reshape(10, 1, 8, 8)), z)  # image-shaped input is the same points
    recon = trained.reconstruct(x.reshape(10, 1, 8, 8))
    assert recon.shape == (10, 1, 8, 8)
    # trained reconstructions are closer to their own inputs than to other images
    many = trained.data.test_x[:200].cpu()
    recon = trained.reconstruct(many)
    own, other = ((recon - many) ** 2).sum(1).mean(), ((recon - many.roll(1, 0)) ** 2).sum(1).mean()
    assert own < 0.9 * other  # 0.76 measured; an untrained pair gives about 1
    assert trained.sample(4, source="aggregate", components=4).shape == (4, 1, 8, 8)
    with pytest.raises(DataError, match="has 10 values per point"):
        trained.encode(torch.zeros(3, 10))


def test_load_restores_the_same_parameters(trained):
    again = ppvae.load(trained.folder)
    x = trained.data.test_x[:16].cpu()
    assert torch.equal(again.encode(x), trained.encode(x))
    assert again.metrics == trained.metrics


def test_evaluate_adds_a_record_and_figures_redraw(trained):
    metrics = trained.evaluate(k=30, num_test=40)
    assert metrics["eval_k"] == 30 and metrics["eval_points"] == 40
    record = trained.folder / "evaluations" / f"{metrics['evaluation']}.json"
    assert json.loads(record.read_text())["eval_k"] == 30
    assert trained.metrics["evaluation"] == metrics["evaluation"]
    assert len(list((trained.folder / "evaluations").glob("*.json"))) == 2  # the first is kept
    paths = trained.figures()
    assert {p.name for p in paths} >= {"reconstructions.png", "samples.png", "manifold.png"}
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_config_dict_runs_too(tmp_path):
    cfg = config.load("quickstart").to_dict()
    run = ppvae.run(cfg, out=tmp_path, train={"epochs": 1}, eval={"k": 5, "num_test": 20})
    assert run.config.train.epochs == 1 and run.metrics["eval_points"] == 20
