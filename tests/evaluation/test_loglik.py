"""The evaluator against the linear-Gaussian model, whose log p(x) and posterior are exact."""

import sys

import numpy as np
import pyro
import pytest
import torch
from linear_gaussian import amortized_guide, d, exact_guide, problem
from ppvae.guides import PointMass, VAEGuide
from ppvae.models import ppca

from ppvae.evaluation.loglik import (
    ELEMENT_BUDGET,
    LOG_WEIGHTS,
    ROW_BUDGET,
    TiledProposal,
    evaluate_detailed,
    load_log_weights,
    load_pointwise,
    log_likelihood,
    plan_chunks,
)


@pytest.fixture(scope="module")
def lg():
    model, p, x = problem(64)
    return model, p, x, ppca.exact_log_likelihood(x, p).numpy()


def test_iwae_with_5000_samples_is_within_005_nats_of_exact_log_likelihood(lg):
    model, p, x, exact = lg
    guide = amortized_guide(p, scale_factor=1.2, loc_noise=0.05)  # decent, not exact: ESS well below k
    res = evaluate_detailed(model, guide, x, k=5000, seed=0)
    gap = res.pointwise["ll"] - exact
    assert abs(gap.mean()) < 0.05 and np.abs(gap).max() < 0.05
    assert res.metrics["ess_median"] < 5000 * 0.9
    # the ELBO split adds up, and the ELBO is below the IWAE bound
    m = res.metrics
    assert m["test_elbo"] == pytest.approx(m["test_recon_loglik"] - m["test_kl"], abs=1e-9)
    assert m["test_elbo"] < m["test_ll"] and m["test_nll"] == -m["test_ll"]
    assert 0 < m["test_ll_se"] < 1


def test_exact_posterior_as_proposal_has_every_khat_below_half(lg):
    model, p, x, exact = lg
    res = evaluate_detailed(model, exact_guide(p), x, k=5000, seed=0)
    assert (res.pointwise["khat"] < 0.5).all()
    np.testing.assert_allclose(res.pointwise["ll"], exact, atol=1e-9)
    np.testing.assert_allclose(res.pointwise["ess"], 5000, rtol=1e-9)
    assert res.metrics["khat_share_above_0_7"] == 0.0


def test_too_narrow_guide_has_most_khat_above_07(lg):
    model, p, x, _ = lg
    res = evaluate_detailed(model, amortized_guide(p, scale_factor=0.3), x, k=5000, seed=0)
    assert res.metrics["khat_share_above_0_7"] > 0.8
    assert (res.pointwise["khat"] > 0.7).mean() == res.metrics["khat_share_above_0_7"]
    assert res.metrics["ess_p05"] < 50


def test_chunking_does_not_change_the_estimate(lg):
    model, p, x, _ = lg
    guide = amortized_guide(p, scale_factor=1.2, loc_noise=0.05)
    runs = [log_likelihood(model, guide, x, k=200, seed=7, chunk_size=c, chunk_points=q, keep_log_weights=True)
            for c, q in [(0, 0), (200, 64), (37, 5), (13, 64), (64, 33)]]
    for other in runs[1:]:
        for key in ("ll", "elbo", "recon", "kl", "log_w"):
            torch.testing.assert_close(other[key], runs[0][key], atol=1e-10, rtol=0)
    different_seed = log_likelihood(model, guide, x, k=200, seed=8)["ll"]
    assert not torch.allclose(different_seed, runs[0]["ll"])


def test_default_seed_follows_pyros_seed(lg):
    model, p, x, _ = lg
    guide = amortized_guide(p, scale_factor=1.2)
    results = []
    for chunk in (0, 11):
        pyro.set_rng_seed(3)
        results.append(evaluate_detailed(model, guide, x, k=100, chunk_size=chunk))
    assert results[0].metrics["eval_seed"] == results[1].metrics["eval_seed"]
    np.testing.assert_allclose(results[0].pointwise["khat"], results[1].pointwise["khat"], atol=1e-9)
    np.testing.assert_allclose(results[0].pointwise["ll"], results[1].pointwise["ll"], atol=1e-10)


def test_chunk_plan_stays_within_the_memory_budgets():
    for n, k, dim in [(10_000, 5000, 784), (60_000, 1, 784), (100, 5000, 12_288), (7, 3, 2)]:
        points, k_chunk = plan_chunks(n, k, dim)
        assert 1 <= points <= n and 1 <= k_chunk <= k
        assert points * k <= max(ROW_BUDGET, k) and points * k_chunk * dim <= max(ELEMENT_BUDGET, dim)
    assert plan_chunks(10_000, 5000, 784) == (64, 32)  # whole sampling tiles
    assert plan_chunks(10_000, 5000, 784, chunk_size=7, chunk_points=5) == (5, 7)


def test_active_units_count_latent_dimensions_the_encoder_uses(lg):
    model, p, x, _ = lg
    guide = amortized_guide(p)
    assert evaluate_detailed(model, guide, x, k=30, seed=0).metrics["active_units"] == d
    with torch.no_grad():
        guide.encoder.weight[1].zero_()  # the mean of z_2 no longer depends on x
    metrics = evaluate_detailed(model, guide, x, k=30, seed=0).metrics
    assert metrics["active_units"] == d - 1 and metrics["latent_units"] == d


def test_reconstruction_from_decoded_draws_pays_the_posterior_spread():
    """With a linear decoder W z + b, the average of L decoded draws z ~ q is off the decoded mean by
    W (z_bar - mu), so its squared error per value exceeds the mean's by tr(W Sigma W^T) / (L D) on average."""
    from ppvae.evaluation.loglik import RECON_DRAWS

    model, p, x = problem(4000, seed=3)
    post = ppca.exact_posterior(x, p)
    m = evaluate_detailed(model, exact_guide(p), x, k=2, seed=0).metrics
    spread = torch.trace(p.W @ post.covariance_matrix[0] @ p.W.T).item() / (RECON_DRAWS * x.shape[1])
    assert m["test_recon_mse_sampled"] - m["test_recon_mse"] == pytest.approx(spread, rel=0.1)
    encoder = torch.nn.Linear(x.shape[1], d).double()
    point = evaluate_detailed(model, VAEGuide(encoder, PointMass(d)), x[:50], k=2, seed=0).metrics
    assert point["test_recon_mse_sampled"] == pytest.approx(point["test_recon_mse"], rel=1e-12)  # a code has no spread


def test_saved_log_weights_reproduce_the_matrix(lg, tmp_path):
    model, p, x, _ = lg
    guide = amortized_guide(p, scale_factor=0.8)
    res = evaluate_detailed(model, guide, x, k=200, seed=5, keep_log_weights=True)
    res.save(tmp_path)
    full = log_likelihood(model, guide, x, k=200, seed=5, keep_log_weights=True)["log_w"].numpy()
    saved = load_log_weights(tmp_path)
    assert saved.shape == (64, 200) and saved.dtype == np.float32
    np.testing.assert_allclose(saved - saved.max(1, keepdims=True), full - full.max(1, keepdims=True), atol=0.02)
    pointwise = load_pointwise(tmp_path)
    assert set(pointwise) == {"ll", "elbo", "recon", "kl", "khat", "ess", "z_mean"}
    assert pointwise["z_mean"].shape == (64, d)
    # an evaluation that does not keep the matrix removes a stale one
    evaluate_detailed(model, guide, x, k=20, seed=5).save(tmp_path)
    assert not (tmp_path / LOG_WEIGHTS).exists()


def test_point_mass_guide_is_reported_not_diagnosed(lg):
    model, p, x, _ = lg
    encoder = torch.nn.Linear(x.shape[1], d).double()
    res = evaluate_detailed(model, VAEGuide(encoder, PointMass(d)), x, k=50, seed=0)
    assert np.isnan(res.pointwise["khat"]).all() and res.metrics["khat_share_above_0_7"] is None
    assert "point mass" in res.metrics["eval_notes"][0]


def test_too_few_samples_for_khat_is_a_note_not_a_number(lg):
    model, p, x, _ = lg
    res = evaluate_detailed(model, amortized_guide(p), x, k=10, seed=0)
    assert res.metrics["khat_share_above_0_7"] is None and "k-hat needs" in res.metrics["eval_notes"][0]
    assert np.isfinite(res.metrics["test_ll"])


def _global_pair():
    """z_n ~ N(0, 1), x_n ~ N(z_n + theta, 1) with a global latent theta ~ N(0, 1) outside the data plate."""
    import pyro.distributions as dist

    def model(x, y=None):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + theta, 1.0), obs=x)

    def guide(x, y=None):
        pyro.sample("theta", dist.Normal(0.3, 0.2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, 0.8))

    return model, guide


def test_global_latents_are_shared_across_points_and_chunk_invariant():
    model, guide = _global_pair()
    x = torch.randn(300)
    runs = [log_likelihood(model, guide, x, k=70, seed=1, chunk_size=c, chunk_points=q, keep_log_weights=True)
            for c, q in [(0, 0), (9, 50), (70, 300)]]
    for other in runs[1:]:
        torch.testing.assert_close(other["log_w"], runs[0]["log_w"], atol=1e-5, rtol=0)
    tiles = TiledProposal(guide, x, None, k=70, nesting=1, seed=1)
    first, later = (tiles.trace(rows, slice(0, 70)).nodes for rows in (slice(0, 10), slice(200, 210)))
    assert first["theta"]["value"].shape == (70, 1)  # one draw per sample, broadcast over the data plate
    torch.testing.assert_close(first["theta"]["value"], later["theta"]["value"])
    assert first["z"]["value"].shape == (70, 10) and not torch.equal(first["z"]["value"], later["z"]["value"])


def test_out_of_gpu_memory_retries_smaller_chunks_with_the_same_numbers(lg, monkeypatch):
    model, p, x, _ = lg
    guide = amortized_guide(p, scale_factor=1.2, loc_noise=0.05)
    expected = log_likelihood(model, guide, x, k=200, seed=2)["ll"]
    module = sys.modules["ppvae.evaluation.loglik"]
    real = module.log_weights

    def small_chunks_only(*args, k, **kwargs):
        if k > 50:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, k=k, **kwargs)

    monkeypatch.setattr(module, "log_weights", small_chunks_only)
    torch.testing.assert_close(log_likelihood(model, guide, x, k=200, seed=2)["ll"], expected, atol=1e-10, rtol=0)


def test_a_direct_call_on_a_batch_norm_pair_in_training_mode_is_safe():
    """Batch norm in training mode would make q(z|x) depend on the rows encoded with x; the evaluator sets
    eval mode itself, so row blocks of any size give the same numbers and the running statistics stay put."""
    from ppvae import config
    from ppvae.build import build_pair
    from ppvae.data import load_dataset

    cfg = config.load("quickstart", ["model.decoder=cnn", "guide.encoder=cnn", "model.latent_dim=3"])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    x = torch.bernoulli(data.test_x[:40], generator=torch.Generator().manual_seed(0))
    stats = {n: b.clone() for n, b in guide.named_buffers()}
    small = evaluate_detailed(model, guide, x, k=8, seed=3, chunk_points=8).metrics["test_ll"]
    large = evaluate_detailed(model, guide, x, k=8, seed=3, chunk_points=40).metrics["test_ll"]
    # float32 convolutions of 8 or 40 images round differently (1e-7 relative); batch statistics move it far more
    assert small == pytest.approx(large, rel=1e-6) and guide.training and model.training
    assert all(torch.equal(b, stats[n]) for n, b in guide.named_buffers())


def test_a_batch_dependent_guide_the_evaluator_cannot_switch_is_refused():
    """Plain model / guide functions closing over batch-norm networks in training mode: the evaluator cannot
    put them in eval mode, so its guide check finds q(z|x) of a point moving with the points encoded beside it."""
    from ppvae import config
    from ppvae.build import build_pair
    from ppvae.data import load_dataset
    from ppvae.errors import EstimatorError

    cfg = config.load("quickstart", ["model.decoder=cnn", "guide.encoder=cnn", "model.latent_dim=3"])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    x = torch.bernoulli(data.test_x[:40], generator=torch.Generator().manual_seed(0))
    with pytest.raises(EstimatorError, match="depends on the other points encoded with it"):
        evaluate_detailed(lambda x, y=None: model(x, y), lambda x, y=None: guide(x, y), x, k=8, seed=3)
    model.eval(), guide.eval()
    assert np.isfinite(evaluate_detailed(lambda x, y=None: model(x, y), lambda x, y=None: guide(x, y), x, k=8,
                                         seed=3).metrics["test_ll"])
