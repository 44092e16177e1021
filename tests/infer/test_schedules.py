"""The published training protocols: learning-rate schedules (Burda et al.'s above all), warm-up, Adam's own
settings, gradient clipping, a validation split with early stopping on the best checkpoint, all exactly resumed."""

import json
import math
import signal

import pytest
import torch

from ppvae import config, runs
from ppvae.cli import main
from ppvae.data import load_dataset
from ppvae.infer import trainer as trainer_module
from ppvae.infer.schedules import Burda, Plateau
from ppvae.infer.trainer import Trainer
from ppvae.studies import run as experiment

TINY = ["data.max_train=64", "data.max_test=32", "train.batch_size=24", "eval.k=8", "model.decoder.hidden=[16]",
        "guide.encoder.hidden=[16]"]


def test_burda_schedule_gives_the_published_rate_at_every_stage_boundary():
    """lr_i = 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7: 3,280 epochs in all."""
    cfg = config.load("quickstart", ["train.schedule=burda", "train.lr=1e-3"])
    data = load_dataset(cfg.data)
    from ppvae.build import build_pair

    model, guide = build_pair(cfg, data)
    trainer = Trainer(model, guide, None, cfg.train)
    start = 0
    for i in range(8):
        for epoch in (start, start + 3**i - 1):  # the first and the last epoch of stage i
            trainer.epoch = epoch
            assert trainer.lr == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12), (i, epoch)
        start += 3**i
    assert start == 3280 and Burda().stage(3279) == 7 and Burda().stage(3280) == 8


def test_warmup_multiplies_the_schedule_and_plateau_decays_after_patience():
    cfg = config.load("quickstart", ["train.warmup_epochs=4", "train.schedule={name=\"exponential\", gamma=0.5}"])
    trainer = Trainer(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), None, cfg.train)
    rates = []
    for epoch in range(5):
        trainer.epoch = epoch
        rates.append(trainer.lr)
    assert rates == pytest.approx([1e-3 * (e + 1) / 4 * 0.5**e if e < 4 else 1e-3 * 0.5**e for e in range(5)])
    plateau = Plateau(gamma=0.5, patience=2)
    factors = []
    for epoch, bound in enumerate([1.0, 2.0, 1.5, 1.9, 1.0, 0.5, 3.0]):
        plateau.observe(epoch, bound)
        factors.append(plateau.factor(epoch + 1))
    assert factors == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]  # a decay after each second validation without a new best
    restored = Plateau(gamma=0.5, patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert (restored.factor(0), restored.best, restored.waited) == (0.25, 3.0, 0)


def test_adam_settings_and_gradient_clipping_reach_the_step(monkeypatch):
    cfg = config.load("quickstart", [*TINY, "train.optimizer={name=\"adam\", eps=1e-4, betas=[0.8, 0.99]}",
                                     "train.clip_grad_norm=0.5"])
    data, trainer = experiment.prepare(cfg)
    group = trainer.optimizer.param_groups[0]
    assert group["eps"] == 1e-4 and group["betas"] == (0.8, 0.99)
    seen = []
    step = trainer.optimizer.step

    def record_then_step(*args, **kwargs):
        grads = [p.grad for p in trainer.params.values() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", record_then_step)
    x, y = next(data.batches(24))
    trainer.train_step(x, y)
    assert seen[0] == pytest.approx(0.5, rel=1e-4)  # the digits VAE's first gradient is far larger than 0.5


def test_validation_split_is_held_out_of_training():
    whole = load_dataset("digits", binarize="dynamic")
    split = load_dataset("digits", binarize="dynamic", validation=100)
    assert split.valid_x.shape == (100, 64) and split.train_x.shape[0] == whole.train_x.shape[0] - 100
    assert split.valid_y is not None and torch.equal(split.test_x, whole.test_x)
    rows = {tuple(r.tolist()) for r in split.train_x}
    assert not any(tuple(r.tolist()) in rows for r in split.valid_x[:20])  # not among the training images
    assert load_dataset("digits", validation=0.1).valid_x.shape[0] == round(0.1 * whole.train_x.shape[0])


@pytest.fixture
def planted(monkeypatch):
    """Validation bounds read from a list instead of measured: early stopping's input, planted."""
    curve = iter([-50.0, -40.0, -45.0, -44.0, -41.0, -39.0, -60.0])
    monkeypatch.setattr(trainer_module, "validation_bound", lambda *args: next(curve))


def test_early_stopping_evaluates_the_best_validation_checkpoint(tmp_path, planted):
    cfg = config.load("quickstart", [*TINY, "data.validation=20", "train.epochs=10", "train.patience=3"])
    run_dir = experiment.run(cfg, out=tmp_path)
    history = runs.read_jsonl(run_dir / runs.EPOCHS)
    # best at epoch 2 (-40); epochs 3, 4, 5 are no better: stop after epoch 5
    assert [h["valid_bound"] for h in history] == [-50.0, -40.0, -45.0, -44.0, -41.0]
    assert [h["best"] for h in history] == [True, True, False, False, False]
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    assert (metrics["epochs"], metrics["best_epoch"], metrics["stopped_early"]) == (5, 2, True)
    assert metrics["evaluated_checkpoint"] == "best (epoch 2)"
    assert "Stopped early" in (run_dir / runs.STATUS).read_text()
    best = runs.load_checkpoint(run_dir / runs.BEST)["trainer"]
    last = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]
    assert best["epoch"] == 2 and last["epoch"] == 5
    _, _, trainer, _ = experiment.load_run(run_dir)
    trainer.load_weights(best)
    assert all(torch.equal(p, best["params"][n]) for n, p in trainer.params.items())
    assert not all(torch.equal(best["params"][n], last["params"][n]) for n in best["params"])


CONFIG = ["quickstart", *TINY, "data.validation=16", "train.epochs=6", "train.schedule=burda",
          "train.validation_k=3", "train.patience=4"]


def run_once(out, *extra):
    code = main(["run", *CONFIG, *extra, "--out", str(out)])
    return code, next(iter(out.iterdir()), None)


def untimed(run_dir):
    strip = lambda r: {k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
    return ([strip(r) for r in runs.read_jsonl(run_dir / runs.EPOCHS)],
            strip(json.loads((run_dir / runs.METRICS).read_text())))


def test_a_run_stopped_inside_a_schedule_stage_resumes_bit_identical(tmp_path, monkeypatch):
    """Stopped by SIGINT in the middle of epoch 3 (inside Burda's stage 1, epochs 2-4), resumed: the same
    per-epoch records (learning rates, validation bounds) and final metrics as a run that never stopped."""
    assert run_once(tmp_path / "whole")[0] == 0
    reference = untimed(next((tmp_path / "whole").iterdir()))
    assert [h["lr"] for h in reference[0]][:5] == pytest.approx([1e-3] + [1e-3 * 10 ** (-1 / 7)] * 3 +
                                                                [1e-3 * 10 ** (-2 / 7)])
    train_step = Trainer.train_step

    def step_then_signal(self, x, y=None):
        loss = train_step(self, x, y)
        if self.step == 7:  # 3 steps per epoch: the first step of epoch 3
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    code, run_dir = run_once(tmp_path / "stopped")
    assert code == 130
    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert untimed(run_dir) == reference
    assert (run_dir / "lr.png").is_file()  # the schedule's rates, drawn
    assert math.isfinite(reference[1]["best_valid_bound"])
