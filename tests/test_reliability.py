"""Bad input gets one clear message and exit code 2, before any training; a diverging run
stops with its last good checkpoint intact; a damaged checkpoint is reported, not unpickled."""

import errno
import json
import math
import os

import numpy as np
import pytest
import torch

from ppvae import runs
from ppvae.cli import main
from ppvae.errors import OutOfMemory
from ppvae.evaluation.memory import retry_on_oom
from ppvae.evaluation.progress import EvaluationProgress
from ppvae.infer.trainer import Trainer

TINY = ["data.max_train=64", "data.max_test=32", "train.epochs=1", "train.batch_size=32", "eval.k=4",
        "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]"]

# A user pair with knobs for the ways such a pair goes wrong.
PAIR = """
import pyro, pyro.distributions as dist
from torch import nn


def make_pair(data, cfg):
    d = cfg.model.latent_dim
    decoder = nn.Linear(d + {decoder_in_extra}, data.x_dim + {decoder_out_extra})
    encoder = nn.Linear(data.x_dim, 2 * (d + {guide_latent_extra}))

    def model(x, y=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(d), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x, y=None):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.{family}(loc, nn.functional.softplus(scale) + 1e-3).to_event(1))

    return model, guide
"""


def write_pair(tmp_path, family="Normal", decoder_in_extra=0, decoder_out_extra=0, guide_latent_extra=0) -> str:
    path = tmp_path / "my_pair.py"
    path.write_text(PAIR.format(family=family, decoder_in_extra=decoder_in_extra,
                                decoder_out_extra=decoder_out_extra, guide_latent_extra=guide_latent_extra))
    return f"model.pair={path}:make_pair"


def run(capsys, tmp_path, *args) -> tuple[int, str]:
    code = main(["run", *args, "--out", str(tmp_path / "runs")])
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "error: " in err and "Traceback" not in err and "Trace Shapes" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("override, fragments", [
    ("train.lrr=0.1", ["Unknown config key 'train.lrr'", "Did you mean 'train.lr'?"]),
    ("trian.lr=0.1", ["Unknown config key 'trian'", "Did you mean 'train'?"]),
    ("train.epochs=two", ['train.epochs = "two" has the wrong type: expected int']),
    ("train.lr=-0.001", ["train.lr = -0.001 is invalid: it must be > 0"]),
    ("estimator.num_particles=0", ["estimator.num_particles = 0 is invalid: it must be >= 1"]),
    ("estimator.k=5", ["estimator.k is not a parameter of estimator 'trace'", "num_particles"]),
    ("model.latent_dim=0", ["model.latent_dim = 0 is invalid: it must be > 0"]),
    ("train.lr=inf", ["train.lr = inf is invalid: it must be a finite number"]),
    ("model.likelihood=bernouli", ["Did you mean 'bernoulli'?"]),
])
def test_bad_config_value_is_named_with_its_fix(capsys, tmp_path, override, fragments):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, override)
    assert_clear_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists()  # refused before a run folder exists


# ----------------------------------------------------------------------------- incompatible parts

def test_bernoulli_on_grey_levels_asks_for_binarization(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "data.binarize=none")
    assert_clear_error(code, err, "needs binary data", "data.binarize = 'dynamic'")


def test_strict_meanfield_without_closed_form_kl(capsys, tmp_path):
    pair = write_pair(tmp_path, family="Cauchy")
    code, err = run(capsys, tmp_path, "quickstart", *TINY, pair, "estimator.name=meanfield", "estimator.strict=true")
    assert_clear_error(code, err, "no closed-form KL", "estimator.strict = false")


def test_guide_latent_shape_must_match_prior(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, write_pair(tmp_path, guide_latent_extra=1))
    assert_clear_error(code, err, "latent site 'z' has shape [32, 3]", "prior draws it with shape [32, 2]",
                       "model.latent_dim")


def test_decoder_output_must_fit_the_images(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, write_pair(tmp_path, decoder_out_extra=1))
    assert_clear_error(code, err, "observed site 'x' has distribution shape [32, 65]", "shape [32, 64]")


def test_a_pair_too_large_for_memory_names_the_sizes_to_lower(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "model.latent_dim=100000000000")
    assert_clear_error(code, err, "does not fit in memory", "lower model.latent_dim or the hidden widths")


def test_torch_error_in_a_user_pair_is_one_line(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, write_pair(tmp_path, decoder_in_extra=1))
    assert_clear_error(code, err, "The model failed on its first batch", "RuntimeError: mat1 and mat2 shapes")
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- data

def test_nan_in_data(capsys, tmp_path):
    x = np.random.default_rng(0).random((50, 8, 8)).astype(np.float32)
    x[3, 2, 1] = np.nan
    np.savez(tmp_path / "x.npz", x=x)
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "data.name=npz", f"data.path={tmp_path / 'x.npz'}")
    assert_clear_error(code, err, "NaN")


def test_wrong_image_layout(capsys, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((50, 28, 28, 3), dtype=np.uint8))
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "data.name=npz", f"data.path={tmp_path / 'x.npz'}")
    assert_clear_error(code, err, "channels-last")


@pytest.mark.parametrize("content", [None, b"MATLAB 5.0 truncated"], ids=["missing", "truncated"])
def test_missing_or_truncated_data_file(capsys, tmp_path, content):
    if content is not None:
        (tmp_path / "frey_rawface.mat").write_bytes(content)
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "data.name=frey_face", f"data.data_dir={tmp_path}",
                    "data.download=false")
    assert_clear_error(code, err, "frey_rawface.mat", "missing" if content is None else "truncated or corrupted")


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture
def finished_run(capsys, tmp_path):
    code, _ = run(capsys, tmp_path, "quickstart", *TINY)
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_truncated_checkpoint_is_reported(capsys, tmp_path, finished_run):
    ckpt = finished_run / runs.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for argv in (["run", "--resume", str(finished_run)], ["eval", str(finished_run)]):
        code = main(argv)
        assert_clear_error(code, capsys.readouterr().err, "damaged or not a ppvae checkpoint", str(ckpt))


def test_an_evaluation_that_would_take_too_long_is_refused_with_its_estimate(capsys, finished_run):
    before = (finished_run / runs.METRICS).read_text()
    code = main(["eval", str(finished_run), "--k", "100000", "eval.max_hours=1e-9"])  # many chunks
    assert_clear_error(code, capsys.readouterr().err, "eval.k = 100000 would take about", "samples per second",
                       "more than eval.max_hours = 1e-09", "raise eval.max_hours")
    assert (finished_run / runs.METRICS).read_text() == before
    status = (finished_run / runs.STATUS).read_text()
    assert status.startswith("trained, not evaluated") and "still holds the earlier evaluation" in status


def test_checkpoint_of_another_pair_is_reported(capsys, tmp_path, finished_run):
    cfg = json.loads((finished_run / runs.CONFIG).read_text())
    cfg["model"]["latent_dim"] = 3
    (finished_run / runs.CONFIG).write_text(json.dumps(cfg))
    code = main(["run", "--resume", str(finished_run)])
    assert_clear_error(code, capsys.readouterr().err, "has shape", "changed after it was saved")


def test_resume_refuses_changes_the_checkpoint_cannot_follow(capsys, tmp_path, finished_run):
    code = main(["run", "--resume", str(finished_run), "model.latent_dim=3"])
    assert_clear_error(code, capsys.readouterr().err, "cannot change model.latent_dim", "train.lr")
    code = main(["run", "--resume", str(tmp_path)])
    assert_clear_error(code, capsys.readouterr().err, "is not a run folder")


def test_resume_refuses_fewer_epochs_than_trained_and_leaves_the_config_alone(capsys, tmp_path, finished_run):
    before = (finished_run / runs.CONFIG).read_text()
    code = main(["run", "--resume", str(finished_run), "train.epochs=0"])
    assert code == 2  # the config's own check: at least 1
    (finished_run / runs.CONFIG).write_text(before.replace('"epochs": 1', '"epochs": 3'))
    assert main(["run", "--resume", str(finished_run), "train.epochs=2"]) == 0  # two epochs trained now
    trained = (finished_run / runs.CONFIG).read_text()
    capsys.readouterr()
    code = main(["run", "--resume", str(finished_run), "train.epochs=1"])
    err = capsys.readouterr().err
    assert_clear_error(code, err, "train.epochs = 1 is fewer than the 2 epochs", "ppvae eval")
    assert (finished_run / runs.CONFIG).read_text() == trained


def test_a_damaged_metrics_file_is_named_before_the_config_changes(capsys, finished_run):
    (finished_run / runs.EPOCHS).write_text('{"epoch": 1, "train_loss": 3.0}\n{"epoch": 2, "trai')
    before = (finished_run / runs.CONFIG).read_text()
    code = main(["run", "--resume", str(finished_run), "train.epochs=3"])
    assert_clear_error(code, capsys.readouterr().err, "Line 2 of", "is damaged", "delete that line")
    assert (finished_run / runs.CONFIG).read_text() == before


def test_compare_names_a_damaged_metrics_file(capsys, tmp_path, finished_run):
    (finished_run / runs.METRICS).write_text('{"test_nll": 3')
    code = main(["compare", str(finished_run), "--out", str(tmp_path / "cmp")])
    assert_clear_error(code, capsys.readouterr().err, f"{finished_run / runs.METRICS} is damaged", "ppvae eval")


@pytest.mark.parametrize("argv, fragment", [
    (["sample", "RUN", "--n", "0"], "argument --n: invalid integer >= 1 value: '0'"),
    (["sample", "RUN", "--components", "0"], "argument --components: invalid integer >= 1 value"),
    (["eval", "RUN", "--k", "0"], "argument --k: invalid integer >= 1 value"),
    (["sample", "RUN", "--from", "aggregate", "--components", "5000"],
     "A 5000-component mixture cannot be fitted to 64 latent codes"),
    (["run", "RUN"], "is a folder, not a config file"),
    (["run", "quickstart", "data.max_test=32", "eval.num_test=33"], "eval.num_test = 33 is more than the 32 test points"),
])
def test_bad_command_line_values_are_one_line_errors(capsys, finished_run, argv, fragment):
    argv = [str(finished_run) if a == "RUN" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err, err


def test_a_run_folder_belongs_to_one_process_at_a_time(capsys, finished_run):
    with runs.owned(finished_run):  # another holder: flock locks belong to an open file, so this conflicts
        for argv in (["run", "--resume", str(finished_run), "train.epochs=2"], ["eval", str(finished_run)]):
            code = main(argv)
            assert_clear_error(code, capsys.readouterr().err, f"is in use by process {os.getpid()}", "kill")
        assert runs.read_jsonl(finished_run / runs.EPOCHS)[-1]["epoch"] == 1  # nothing ran
    assert main(["run", "--resume", str(finished_run), "train.epochs=2"]) == 0  # released: it runs
    assert "pid" not in (finished_run / runs.STATUS).read_text()  # trained, no longer "running (pid N)"


# ----------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("poison_step", [3, 4], ids=["last-batch", "mid-epoch"])
def test_nan_gradient_stops_with_last_good_checkpoint(capsys, tmp_path, monkeypatch, poison_step):
    """A gradient hook turns one step's gradient into NaN. With 2 steps per epoch the poisoned step
    (0-based 3 or 4) falls in epoch 2 or 3; the checkpoint of the epoch before must survive."""
    setup = Trainer.setup
    poisoned = []

    def setup_with_poison(self, x, y=None):
        setup(self, x, y)
        def poison(grad):
            if self.step == poison_step and not poisoned:
                poisoned.append(self.step)
                return grad * math.nan
            return grad
        next(iter(self.params.values())).register_hook(poison)

    monkeypatch.setattr(Trainer, "setup", setup_with_poison)
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "train.epochs=4")
    epoch, batch = poison_step // 2 + 1, poison_step % 2 + 1
    assert_clear_error(code, err, f"diverged at epoch {epoch}, step {poison_step + 1} (batch {batch} of the epoch)",
                       "a gradient was NaN", "learning rate", "sigma", "[0, 1]", "ppvae run --resume")
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]
    assert (state["epoch"], state["step"], state["batch"]) == (epoch - 1, 2 * (epoch - 1), 0)
    assert all(torch.isfinite(p).all() for p in state["params"].values())
    assert [r["epoch"] for r in runs.read_jsonl(run_dir / runs.EPOCHS)] == list(range(1, epoch))
    assert (run_dir / runs.STATUS).read_text().startswith("failed: Training diverged")
    # the run folder's advice works: continue from the last good checkpoint with a lower learning rate
    assert main(["run", "--resume", str(run_dir), "train.lr=0.0005"]) == 0
    assert [r["epoch"] for r in runs.read_jsonl(run_dir / runs.EPOCHS)] == [1, 2, 3, 4]
    assert json.loads((run_dir / runs.CONFIG).read_text())["train"]["lr"] == 0.0005


def test_non_finite_loss_on_the_first_batch_is_refused(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "model.likelihood=gaussian_fixed", "model.likelihood.sigma=1e-30")
    assert_clear_error(code, err, "on the first batch, before any training step", "sigma")


# ----------------------------------------------------------------------------- memory

def test_retry_on_oom_halves_the_chunk_until_it_fits():
    tried = []

    def fn(chunk):
        tried.append(chunk)
        if chunk > 200:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return chunk * 2

    assert retry_on_oom(fn, 1000) == (250, 125)
    assert tried == [1000, 500, 250, 125]


def test_retry_on_oom_gives_a_clear_error_at_the_smallest_chunk():
    def fn(chunk):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(OutOfMemory, match="even with chunks of 4.*eval.k"):
        retry_on_oom(fn, 16, min_chunk=4)


# ----------------------------------------------------------------------------- disks

def test_a_read_only_run_folder_is_refused_before_the_evaluation(capsys, monkeypatch, finished_run):
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(finished_run)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(EvaluationProgress, "__call__", lambda self, samples: pytest.fail("evaluated anyway"))
    code = main(["eval", str(finished_run)])
    assert_clear_error(code, capsys.readouterr().err, f"Cannot write {finished_run}: Read-only file system",
                       "copied somewhere writable")


def test_a_full_disk_stops_the_run_with_its_last_checkpoint_and_resume_finishes_it(capsys, tmp_path, monkeypatch):
    real_fsync, train_step = os.fsync, Trainer.train_step
    disk = {"full": False, "filled_once": False}

    def fsync(fd):
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def step_then_fill_the_disk(self, x, y=None):
        loss = train_step(self, x, y)
        if self.step == 3 and not disk["filled_once"]:  # during epoch 2 (two steps per epoch)
            disk["full"] = disk["filled_once"] = True
        return loss

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Trainer, "train_step", step_then_fill_the_disk)
    code, err = run(capsys, tmp_path, "quickstart", *TINY, "train.epochs=3")
    assert_clear_error(code, err, "No space left on the disk for", "KB)", "the last checkpoint is kept",
                       "ppvae run --resume")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))
    disk["full"] = False
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert [r["epoch"] for r in runs.read_jsonl(run_dir / runs.EPOCHS)] == [1, 2, 3]


def test_run_files_are_readable_by_a_colleague_as_the_umask_allows(finished_run):
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in finished_run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and any(p.name == "metrics.json" for p in files)
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o666 & ~umask for p in files}
