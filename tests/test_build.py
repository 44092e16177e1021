"""Conditional (CVAE) and denoising (DVAE) pairs built from the config."""

import json

import pytest
import torch
from ppvae.guides.denoising import DenoisingGuide, salt_and_pepper

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.errors import DataError, EstimatorError
from ppvae.studies import run as experiment


def test_conditional_pair_reads_labels(tmp_path):
    cfg = config.load("quickstart", ["model.conditional=true", "train.epochs=2", "eval.k=10", "data.max_train=300"])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    assert model.decoder[0].in_features == cfg.model.latent_dim + 10
    assert guide.encoder[0].in_features == data.x_dim + 10
    z = torch.zeros(2, cfg.model.latent_dim)
    assert not torch.allclose(model.decode_mean(z, torch.tensor([0, 1]))[0], model.decode_mean(z, torch.tensor([0, 1]))[1])
    run_dir = experiment.run(cfg, out=tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["test_nll"] < 64 * 0.7


def test_conditional_pair_needs_labels():
    cfg = config.load("quickstart", ["model.conditional=true"])
    data = load_dataset(cfg.data)
    data.train_y = None
    with pytest.raises(DataError, match="needs labels"):
        build_pair(cfg, data)


def test_salt_and_pepper_levels():
    x = torch.full((20000,), 0.5)
    assert torch.equal(salt_and_pepper(x, 0.0), x)
    noisy = salt_and_pepper(x, 0.3)
    hit = noisy != 0.5
    assert abs(hit.float().mean().item() - 0.3) < 0.02
    assert abs(noisy[hit].mean().item() - 0.5) < 0.03  # salt and pepper equally often


def test_denoising_guide_corrupts_only_in_training():
    seen = []
    guide = DenoisingGuide(lambda x, y=None: seen.append(x), level=0.25)
    x = torch.full((100, 64), 0.5)
    guide.train()
    guide(x)
    assert (seen[-1] != 0.5).float().mean().item() == pytest.approx(0.25, abs=0.05)
    guide.eval()
    guide(x)
    assert torch.equal(seen[-1], x)


@pytest.mark.parametrize("estimator", ["trace", "iwae"])
def test_denoising_vae_runs(tmp_path, estimator):
    cfg = config.load("quickstart", ["guide.noise=0.25", "train.epochs=1", "eval.k=10", "data.max_train=200",
                                     f"estimator.name={estimator}", *["estimator.k=3"] * (estimator == "iwae")])
    assert isinstance(build_pair(cfg, load_dataset(cfg.data))[1], DenoisingGuide)
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    assert 0 < metrics["test_nll"] < 64 * 0.7 * 1.2


@pytest.mark.parametrize("estimator", ["trace", "iwae"])
def test_two_stochastic_layers(tmp_path, estimator):
    import pyro.poutine as poutine

    cfg = config.load("quickstart", ["model.latent_dim=4", "model.top_latent_dim=2", "model.top.hidden=[16]",
                                     "train.epochs=2", "eval.k=20", "data.max_train=300",
                                     f"estimator.name={estimator}", *["estimator.k=5"] * (estimator == "iwae")])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    x = data.test_x[:7]
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (7, 4) and guide_tr.nodes["z2"]["value"].shape == (7, 2)
    assert model_tr.nodes["z"]["fn"].batch_shape == (7,)  # p(z1 | z2) per data point
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    assert metrics["test_ll"] > metrics["test_elbo"] - 0.5 and metrics["test_nll"] < 64 * 0.7


def test_two_layer_config_is_checked():
    from ppvae.errors import ConfigError

    with pytest.raises(ConfigError, match="two stochastic layers"):
        config.load("quickstart", ["model.top_latent_dim=2", "guide.family=delta"])
    with pytest.raises(ConfigError, match="'dreg' is biased with two stochastic layers"):  # Bauer & Mnih 2021
        config.load("quickstart", ["model.top_latent_dim=2", "estimator.name=iwae", "estimator.gradient=dreg"])
    config.load("quickstart", ["model.top_latent_dim=2", "estimator.name=iwae", "estimator.gradient=standard"])


def test_linear_noise_schedule_falls_each_epoch_and_is_checkpointed():
    cfg = config.load("quickstart", ["guide.noise=0.5", "guide.noise_schedule=linear", "guide.noise_end=0.1",
                                     "train.epochs=5"])
    guide = build_pair(cfg, load_dataset(cfg.data))[1]
    levels = [guide.level]
    for epoch in range(1, 5):
        guide.on_epoch_end(epoch)
        levels.append(guide.level)
    assert levels == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    fresh = build_pair(cfg, load_dataset(cfg.data))[1]
    fresh.load_state_dict(guide.state_dict())
    assert fresh.level == pytest.approx(0.1)
    constant = build_pair(config.load("quickstart", ["guide.noise=0.5", "guide.noise_end=0.1"]),
                          load_dataset(cfg.data))[1]
    constant.on_epoch_end(3)
    assert constant.level == 0.5


def test_evaluation_runs_in_eval_mode_so_a_denoising_guide_sees_clean_inputs(tmp_path):
    from ppvae.evaluation.loglik import evaluate_detailed
    from ppvae.nn import eval_mode

    cfg = config.load("quickstart", ["guide.noise=0.5", "train.epochs=1", "eval.k=10", "data.max_train=200"])
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    _, data, trainer, _ = experiment.load_run(next(tmp_path.iterdir()))
    model, guide = trainer.model, trainer.guide
    assert guide.training  # training mode outside evaluation; the evaluator switches to eval mode itself
    direct = evaluate_detailed(model, guide, data.test_x, data.test_y, k=10, seed=metrics["eval_seed"])
    assert direct.metrics["test_ll"] == pytest.approx(metrics["test_ll"], abs=1e-6) and guide.training
    with eval_mode(model, guide):
        clean = evaluate_detailed(model, guide, data.test_x, data.test_y, k=10, seed=metrics["eval_seed"])
    assert clean.metrics["test_ll"] == direct.metrics["test_ll"]
    # a guide the evaluator cannot switch (a plain function around the training-mode module) corrupts its
    # inputs at random: draws of one q would be weighted by another, so evaluation refuses
    with pytest.raises(EstimatorError, match="differs between two runs"):
        evaluate_detailed(model, lambda x, y=None: guide(x, y), data.test_x, data.test_y, k=10,
                          seed=metrics["eval_seed"])
