"""Interrupted runs lose nothing: Ctrl-C or SIGTERM saves the exact position, and resuming gives
the same numbers as a run that never stopped; two runs with one seed agree exactly (CPU)."""

import json
import signal

import pytest

from ppvae import runs
from ppvae.cli import main
from ppvae.evaluation.progress import EvaluationProgress
from ppvae.infer.trainer import Trainer

# 64 points in batches of 24: 3 steps per epoch (24, 24, 16); dynamic binarization draws every batch.
CONFIG = ["quickstart", "data.max_train=64", "data.max_test=32", "train.epochs=3", "train.batch_size=24",
          "eval.k=8", "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]"]


def run_once(out, *extra) -> tuple[int, object]:
    code = main(["run", *CONFIG, *extra, "--out", str(out)])
    dirs = list(out.iterdir())
    return code, (dirs[0] if dirs else None)


def results(run_dir) -> tuple[list[dict], dict]:
    """Per-epoch records and final metrics, without wall-clock times."""
    def untimed(record: dict) -> dict:
        return {k: v for k, v in record.items() if "seconds" not in k}

    history = [untimed(r) for r in runs.read_jsonl(run_dir / runs.EPOCHS)]
    return history, untimed(json.loads((run_dir / runs.METRICS).read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    code, run_dir = run_once(tmp_path_factory.mktemp("reference"))
    assert code == 0
    return results(run_dir)


def test_same_seed_same_metrics(tmp_path, reference):
    code, run_dir = run_once(tmp_path)
    assert code == 0
    assert results(run_dir) == reference
    assert [r["epoch"] for r in reference[0]] == [1, 2, 3]


@pytest.mark.parametrize("sig, after_step", [(signal.SIGINT, 4), (signal.SIGTERM, 6)],
                         ids=["sigint-mid-epoch", "sigterm-epoch-end"])
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, capsys, monkeypatch, reference, sig, after_step):
    train_step = Trainer.train_step

    def step_then_signal(self, x, y=None):
        loss = train_step(self, x, y)
        if self.step == after_step:
            signal.raise_signal(sig)  # what Ctrl-C or `kill` does, in the middle of training
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    code, run_dir = run_once(tmp_path)
    err = capsys.readouterr().err
    assert code == 128 + sig, err
    assert f"Stopped by {signal.Signals(sig).name} at epoch {(after_step - 1) // 3 + 1}, step {after_step}" in err
    assert f"ppvae run --resume {run_dir}" in err
    assert (run_dir / runs.STATUS).read_text().startswith("interrupted:")
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]
    assert state["step"] == after_step
    assert (state["epoch"], state["batch"]) == (1, 1 if after_step == 4 else 3)
    assert not (run_dir / runs.METRICS).exists()

    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert results(run_dir) == reference
    assert (run_dir / runs.STATUS).read_text().startswith("trained:")


def test_a_stop_during_evaluation_keeps_the_trained_run_and_eval_finishes_it(tmp_path, capsys, monkeypatch,
                                                                             reference):
    count = EvaluationProgress.__call__

    def count_then_sigterm(self, samples):
        count(self, samples)
        signal.raise_signal(signal.SIGTERM)  # `kill` while the test log-likelihood is computed

    monkeypatch.setattr(EvaluationProgress, "__call__", count_then_sigterm)
    code, run_dir = run_once(tmp_path)
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM, err
    assert "Stopped by SIGTERM" in err and f"evaluate it with: ppvae eval {run_dir}" in err
    assert (run_dir / runs.STATUS).read_text().startswith("trained, not evaluated (3 epochs, 9 steps)")
    assert not (run_dir / runs.METRICS).exists()
    monkeypatch.undo()
    assert main(["eval", str(run_dir)]) == 0
    assert results(run_dir) == reference
    status = (run_dir / runs.STATUS).read_text()
    assert status.startswith("trained: 3 epochs, 9 steps.") and "Evaluated: k8-n32-" in status


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    train_step = Trainer.train_step

    def step_then_two_signals(self, x, y=None):
        loss = train_step(self, x, y)
        if self.step == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_two_signals)
    code, run_dir = run_once(tmp_path)
    assert code == 130
    assert "Traceback" not in capsys.readouterr().err
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]
    assert (state["epoch"], state["step"]) == (0, 0)  # the checkpoint written before the first step


def test_metrics_ahead_of_the_checkpoint_are_not_duplicated(tmp_path, reference):
    """A crash between writing metrics.jsonl and the checkpoint leaves an extra line; resuming drops it."""
    code, run_dir = run_once(tmp_path, "train.epochs=2")
    assert code == 0
    runs.append_jsonl(run_dir / runs.EPOCHS, {"epoch": 3, "train_loss": 0.0})
    assert main(["run", "--resume", str(run_dir), "train.epochs=3"]) == 0
    history, metrics = results(run_dir)
    assert history == reference[0]
    assert metrics["epochs"] == 3
