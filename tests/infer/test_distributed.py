"""Data-parallel training (torchrun, gloo on CPU): two ranks take the step of the full batch."""

import subprocess
import sys

import pytest
import torch

from ppvae import config, runs
from ppvae.cli import main
from ppvae.infer.distributed import step_seed
from ppvae.studies.run import prepare

RUN = """
[data]
name = "digits"
binarize = "static"
max_train = 190
[model]
latent_dim = 2
decoder = { hidden = [16] }
[guide]
encoder = { hidden = [16] }
[train]
epochs = 1
batch_size = 50
seed = 4
optimizer = "sgd"  # not Adam, whose step does not see a gradient scaled by a constant
lr = 0.05
[eval]
k = 2
num_test = 20
"""


def full_batch_reference(cfg):
    """One process: each global batch's gradient summed over the two ranks' slices, each slice's noise
    drawn from that rank's seed for the step, then one optimizer step."""
    data, trainer = prepare(cfg)
    start = {name: p.detach().clone() for name, p in trainer.params.items()}
    for step, (x, _) in enumerate(data.batches(cfg.train.batch_size, trainer.shuffle)):
        trainer.optimizer.zero_grad(set_to_none=True)
        for rank, xs in enumerate(torch.tensor_split(x, 2)):
            torch.manual_seed(step_seed(cfg.train.seed, step, rank))
            trainer.estimator.backward(trainer.model, trainer.guide, xs, None, scale=1.0 / x.shape[0])
        trainer.optimizer.step()
    return start, trainer.params


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["estimator.name=trace"], ["estimator.name=meanfield"],
                                       ["estimator.name=iwae", "estimator.k=5"],
                                       ["model.weights=bayesian"]], ids=["trace", "meanfield", "iwae", "bayesian"])
def test_two_ranks_give_the_parameters_of_the_full_batch_step(tmp_path, overrides):
    path = tmp_path / "run.toml"
    path.write_text(RUN)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "ppvae.cli", "run", str(path), *overrides, "--nproc", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # the installed ppvae, not a checkout's ./ppvae
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = out.iterdir()  # rank 0 alone writes: one folder, evaluated
    assert runs.evaluated(run_dir)
    trained = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]
    assert trained["step"] == 4  # 190 points in batches of 50; the last batch is split 20 / 20
    start, reference = full_batch_reference(config.load(str(path), overrides))
    for name, value in reference.items():
        assert not torch.allclose(value, start[name]), name  # it trained
        torch.testing.assert_close(trained["params"][name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    if overrides == ["estimator.name=trace"]:  # the checkpoint continues in one process
        assert main(["run", "--resume", str(run_dir), "train.epochs=2"]) == 0
        assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]["step"] == 8


def test_more_ranks_than_cores_is_refused_before_anything_starts(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(RUN)
    assert main(["run", str(path), "--nproc", "1000", "--out", str(tmp_path / "out")]) == 2
    assert "--nproc 1000 is more ranks than this machine's" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["run", "aevb_vae_vs_ae", "--nproc", "2"]) == 2
    assert "for a study use --workers" in capsys.readouterr().err
