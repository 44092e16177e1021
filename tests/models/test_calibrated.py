"""Calibrated Gaussian decoders: the closed-form sigma, the two-stage per-pixel sigma, uncertainty maps."""

import math

import pytest
import torch
from ppvae.models.likelihoods.calibrated import GaussianPerPixel, optimal_sigma

import ppvae
from ppvae import runs
from ppvae.config import load
from ppvae.evaluation.sampling import decode
from ppvae.infer.trainer import validation_bound
from ppvae.studies import sample
from ppvae.studies.run import load_run, prepare, run

TINY = ["data.binarize=none", "data.max_train=200", "data.max_test=50", "train.batch_size=50", "model.latent_dim=2",
        "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]", "eval.k=5"]


def gaussian_loglik(mean: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(mean, sigma).log_prob(x).sum()


def test_closed_form_sigma_maximizes_the_gaussian_likelihood():
    x, mean = torch.rand(64, 30, dtype=torch.float64), torch.rand(64, 30, dtype=torch.float64)
    best = optimal_sigma(mean, x, floor=1e-6)
    # autograd: gradient ascent on log sigma from far away lands on the closed form
    log_sigma = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_sigma], max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -gaussian_loglik(mean, x, log_sigma.exp())
        loss.backward()
        return loss

    opt.step(closure)
    assert log_sigma.exp().item() == pytest.approx(best.item(), rel=1e-6)
    # grid: no sigma nearby does better
    grid = best * torch.linspace(0.5, 1.5, 201, dtype=torch.float64)
    values = torch.distributions.Normal(mean, grid[:, None, None]).log_prob(x).sum((1, 2))
    assert values.max() <= gaussian_loglik(mean, x, best) + 1e-9
    assert grid[values.argmax()].item() == pytest.approx(best.item(), rel=0.01)


def test_closed_form_sigma_respects_the_floor():
    x = torch.rand(10, 5)
    assert optimal_sigma(x, x, floor=1e-3).item() == pytest.approx(1e-3)


def test_trainer_sets_sigma_to_the_batch_optimum_after_each_step():
    """With a point-mass guide z is deterministic, so the alternation can be checked exactly."""
    cfg = load("quickstart", TINY + ["model.likelihood=gaussian_optimal", "guide.family=delta", "model.likelihood.sigma=1.0"])
    data, trainer = prepare(cfg)
    model, guide = trainer.model, trainer.guide
    x = data.train_x[:50]
    trainer.train_step(x)
    with torch.no_grad():
        recon = model.decoder(guide.posterior(x).mean)
    assert model.likelihood.sigma.item() == pytest.approx(optimal_sigma(recon, x, 1e-3).item(), rel=1e-5)
    assert trainer.extra_metrics()["likelihood_sigma"] == pytest.approx(model.likelihood.sigma.item())


def test_evaluation_uses_the_training_sets_optimal_sigma_not_the_last_batchs(tmp_path, monkeypatch):
    """200 training points in batches of 64: the last batch holds 8, and its sigma is not the set's."""
    cfg = load("quickstart", TINY + ["model.likelihood=gaussian_optimal", "guide.family=delta", "train.epochs=2",
                                     "train.batch_size=64"])
    run_dir = run(cfg, out=tmp_path)
    last_batch = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["trainer"]["modules"]["model"]["likelihood.sigma"]
    _, data, trainer, _ = load_run(run_dir)
    with torch.no_grad():  # a point-mass guide: z = encoder(x) exactly, so the set's optimum is known
        recon = trainer.model.decoder(trainer.guide.posterior(data.train_x).mean)
    whole = optimal_sigma(recon, data.train_x, 1e-3).item()
    evaluated = runs.read_json(run_dir / runs.METRICS)["likelihood_sigma"]
    assert evaluated == pytest.approx(whole, rel=1e-5) and abs(last_batch.item() - whole) > 1e-4
    # the Python API and ppvae sample open the pair evaluation scored, not the checkpoint's last-batch sigma
    assert ppvae.load(run_dir).model.likelihood.sigma.item() == pytest.approx(whole, rel=1e-5)
    decoded_with = []
    monkeypatch.setattr(sample, "decode", lambda model, *a: decoded_with.append(model.likelihood.sigma.item())
                        or decode(model, *a))
    sample.sample_run(run_dir, n=4)
    assert decoded_with == [pytest.approx(whole, rel=1e-5)]


def test_the_validation_bound_uses_the_training_sets_sigma_and_leaves_training_alone():
    """The best checkpoint is chosen by the bound evaluation would give it: with the training set's
    closed-form sigma, not the last (8-point) batch's; training goes on from the last batch's sigma."""
    cfg = load("quickstart", TINY + ["model.likelihood=gaussian_optimal", "guide.family=delta",
                                     "train.batch_size=64", "data.validation=40"])
    data, trainer = prepare(cfg)
    result = trainer.fit_epoch(data)
    last_batch = trainer.model.likelihood.sigma.item()
    seed = (cfg.train.seed, trainer.epoch)
    with_last_batch = validation_bound(trainer.model, trainer.guide, data, cfg.train.validation_k, seed)
    with torch.no_grad():  # a point-mass guide: the set's optimum is known exactly
        recon = trainer.model.decoder(trainer.guide.posterior(data.train_x).mean)
    whole = optimal_sigma(recon, data.train_x, 1e-3).item()
    trainer.model.likelihood.sigma.fill_(whole)
    with_whole = validation_bound(trainer.model, trainer.guide, data, cfg.train.validation_k, seed)
    assert result.valid_bound == pytest.approx(with_whole, abs=1e-4)
    assert abs(with_last_batch - with_whole) > 0.01 and abs(last_batch - whole) > 1e-4


def test_per_pixel_sigma_never_falls_below_the_stage_one_sigma():
    lik = GaussianPerPixel(sigma=0.2)
    lik.stage = 2
    out = torch.cat([torch.rand(500, 40), torch.linspace(-1e4, 1e4, 500)[:, None].expand(500, 40)], dim=-1)
    scale = lik(out).base_dist.scale
    assert (scale >= lik.sigma).all() and scale.min().item() == pytest.approx(0.2)
    assert scale.max() > 1.0  # the head can raise sigma far above the bound
    lik.stage = 1
    assert (lik(out).base_dist.scale == lik.sigma).all()  # stage one: the head is ignored


def test_stage_switch_on_convergence_or_at_the_cap():
    lik = GaussianPerPixel(sigma=1.0, stage_one_tol=0.05, stage_one_max_epochs=10)
    x = torch.rand(8, 4)
    for epoch, error in enumerate([0.5, 0.3, 0.29], start=1):  # epoch sigmas: change 40 %, then 3.3 %
        lik.after_step(torch.cat([x + error, torch.zeros_like(x)], -1), x)
        lik.on_epoch_end(epoch)
        assert lik.stage == (2 if epoch == 3 else 1)
    assert lik.switch_epoch == 3 and lik.sigma.item() == pytest.approx(0.29, rel=1e-5)
    capped = GaussianPerPixel(sigma=1.0, stage_one_tol=1e-9, stage_one_max_epochs=1)
    capped.after_step(torch.cat([x + 0.5, torch.zeros_like(x)], -1), x)
    capped.on_epoch_end(1)
    assert capped.stage == 2 and capped.switch_epoch == 1


def test_two_stage_run_logs_the_switch_checkpoints_the_stage_and_draws_uncertainty_maps(tmp_path, caplog):
    cfg = load("quickstart", TINY + ["model.likelihood=gaussian_perpixel", "model.likelihood.stage_one_max_epochs=2",
                                     "train.epochs=4"])
    run_dir = run(cfg, out=tmp_path)
    hist = runs.read_jsonl(run_dir / runs.EPOCHS)
    assert [h["likelihood_stage"] for h in hist] == [1, 2, 2, 2]
    assert all(h["stage_switch_epoch"] == (2 if h["epoch"] >= 2 else 0) for h in hist)
    assert "stage two" in caplog.text
    bound = hist[-1]["likelihood_sigma"]
    assert bound == pytest.approx(hist[1]["stage_one_epoch_sigma"])  # frozen at the switch
    for name in ("uncertainty_reconstructions.png", "uncertainty_samples.png"):
        assert (run_dir / name).is_file()
    # the stage, the bound and the head survive a checkpoint round trip
    from ppvae.studies.run import load_run

    _, data, trainer, _ = load_run(run_dir)
    lik = trainer.model.likelihood
    assert lik.stage == 2 and lik.switch_epoch == 2 and lik.sigma.item() == pytest.approx(bound)
    with torch.no_grad():
        z = torch.randn(100, 2)
        scale = lik(trainer.model.decoder(z)).base_dist.scale
    assert (scale >= bound).all() and scale.std() > 0
    metrics = runs.read_json(run_dir / runs.METRICS)
    assert metrics["likelihood_stage"] == 2 and math.isfinite(metrics["test_elbo"])


def test_global_sigma_runs_draw_no_uncertainty_maps(tmp_path):
    run_dir = run(load("quickstart", TINY + ["model.likelihood=gaussian_optimal", "train.epochs=1"]), out=tmp_path)
    assert not (run_dir / "uncertainty_reconstructions.png").exists()
    assert 0 < runs.read_json(run_dir / runs.METRICS)["likelihood_sigma"] < 1


def test_closed_form_sigma_is_refused_where_the_model_runs_no_update():
    from ppvae.errors import ConfigError

    with pytest.raises(ConfigError, match="gaussian_learned"):
        prepare(load("quickstart", TINY + ["model.likelihood=gaussian_optimal", "model.weights=bayesian"]))
