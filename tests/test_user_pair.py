"""A pair written from scratch (the README's example) works with every estimator."""

import json
import math
import re
from pathlib import Path

import pytest

from ppvae import config
from ppvae.errors import PPVAEError
from ppvae.studies import run as experiment

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


SWAPPING_FACTORY = '''
from typing import Annotated

import pyro.distributions as dist
import torch
from torch import nn

from ppvae import build_pair
from ppvae.registry import Param


class WidePrior(nn.Module):
    def __init__(self, latent_dim, scale):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def forward(self):
        return dist.Normal(torch.zeros_like(self.scale), self.scale).to_event(1)


def make_pair(data, cfg, *, prior_scale: Annotated[float, Param("> 0", "sd of the prior")] = 1.0):
    """The bundled pair with its prior swapped: build_pair here builds the bundled pair, not this one."""
    model, guide = build_pair(cfg, data)
    model.prior = WidePrior(cfg.model.latent_dim, prior_scale)
    return model, guide
'''


def test_a_factory_swaps_a_part_of_the_bundled_pair_and_takes_its_own_parameters(tmp_path):
    path = tmp_path / "swap.py"
    path.write_text(SWAPPING_FACTORY)
    cfg = config.load("quickstart", [f"model.pair={path}:make_pair", "model.pair_params.prior_scale=2.5",
                                     "train.epochs=1", "eval.k=10", "data.max_train=100"])
    run_dir = experiment.run(cfg, out=tmp_path / "runs")
    _, _, trainer, _ = experiment.load_run(run_dir)
    assert float(trainer.model.prior.scale[0]) == 2.5  # the swapped part, with the TOML parameter
    assert json.loads((run_dir / "config.json").read_text())["model"]["pair_params"] == {"prior_scale": 2.5}
    for bad, message in (("model.pair_params.prior_scal=2", "Did you mean 'model.pair_params.prior_scale'"),
                         ("model.pair_params.prior_scale=-1", "prior_scale = -1.0 is invalid: it must be > 0")):
        with pytest.raises(PPVAEError, match=message):
            experiment.run(config.load("quickstart", [f"model.pair={path}:make_pair", bad]), out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before any run folder exists


def test_code_named_by_a_received_run_folder_does_not_run_unasked(pair_file, tmp_path, capsys):
    """A run folder from someone else names a pair file this user never ran: eval, sample and resume refuse to
    import it (naming it) until --trust-pair; a file the user ran themselves needs no flag."""
    from ppvae.cli import main

    cfg = config.load("quickstart", [f"model.pair={pair_file}:make_pair", "train.epochs=1", "eval.k=5",
                                     "data.max_train=100"])
    mine = experiment.run(cfg, out=tmp_path / "mine")
    assert main(["eval", str(mine)]) == 0  # the user named this file: trusted
    received = tmp_path / "received.py"
    received.write_text(pair_file.read_text() + "\nRAN = open(__file__ + '.ran', 'w')  # a side effect\n")
    raw = json.loads((mine / "config.json").read_text())
    raw["model"]["pair"] = f"{received}:make_pair"
    (mine / "config.json").write_text(json.dumps(raw))
    capsys.readouterr()
    for argv in (["eval", str(mine)], ["sample", str(mine)], ["run", "--resume", str(mine), "train.epochs=2"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(received) in err and "--trust-pair" in err, err
    assert main(["compare", str(mine), "--out", str(tmp_path / "cmp")]) == 0  # reads files, imports no pair
    assert not Path(f"{received}.ran").exists()  # nothing of it ran
    assert main(["eval", str(mine), "--trust-pair"]) == 0 and Path(f"{received}.ran").exists()
    assert main(["sample", str(mine)]) == 0  # trusted from now on: this user has run it
