"""The Bayesian decoder: global weight sites, their B/N scaling, shared draws, the local
reparameterization trick, MAP initialization and predictive evaluation."""

import math
import warnings
from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppvae.models.bayesian import weight_kl
from pyro import poutine

from ppvae import config
from ppvae.analyses.weight_predictive import decode_weight_draws, pointwise_log_likelihood
from ppvae.build import build_pair
from ppvae.data import Dataset, load_dataset
from ppvae.errors import ConfigError, EstimatorError
from ppvae.infer.estimators import make_estimator
from ppvae.infer.importance import log_weights
from ppvae.infer.trainer import Trainer
from ppvae.sites import DATA_PLATE, PARTICLE_PLATE, Preset, decode_mean, plate_shape
from ppvae.studies import run as experiment

TINY = ["model.weights=bayesian", "model.latent_dim=2", "model.decoder.hidden=[4]", "guide.encoder.hidden=[4]"]


def toy_data(n: int = 60, d: int = 6, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n + 10, d, generator=g) < torch.linspace(0.1, 0.9, d)).double()
    return Dataset("toy", x[:n], x[n:], (1, 1, d), binarize="static")


def toy_pair(*overrides: str, data: Dataset | None = None):
    cfg = config.load("quickstart", [*TINY, *overrides])
    data = data or toy_data()
    model, guide = build_pair(cfg, data)
    return cfg, data, model.double(), guide.double()


def test_weights_are_global_sites_scaled_by_batch_over_dataset_size():
    cfg, data, model, guide = toy_pair()
    x = data.train_x[:15]
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    weights = [n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and n.startswith("decoder.")]
    assert weights == list(model.decoder.site_shapes()) == ["decoder.0.weight", "decoder.0.bias",
                                                            "decoder.2.weight", "decoder.2.bias"]
    for tr in (guide_tr, model_tr):
        for name in weights:
            assert tr.nodes[name]["scale"] == pytest.approx(15 / 60)
            assert not tr.nodes[name]["cond_indep_stack"]  # outside the data plate
        assert tr.nodes["z"]["scale"] == 1.0 and [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == [DATA_PLATE]


def test_the_per_batch_kl_ablation_counts_the_weights_kl_once_per_full_batch():
    """model.weights.kl_per_batch: scale 1 on the weight sites of a batch of train.batch_size (N / B times the
    right scale), so an epoch counts the KL N / B times; the local sites and the evaluation are untouched."""
    cfg, data, model, guide = toy_pair("model.weights.kl_per_batch=true", "train.batch_size=15")
    x = data.train_x[:15]
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    for tr in (guide_tr, model_tr):
        assert tr.nodes["decoder.0.weight"]["scale"] == pytest.approx(1.0) and tr.nodes["z"]["scale"] == 1.0
    assert model.dataset_size == guide.dataset_size == 60  # the reported KL per example stays per example


@pytest.mark.parametrize("estimator, extra", [("meanfield", {}), ("trace", {}), ("iwae", {"k": 3})])
def test_full_data_objective_equals_sum_of_minibatch_objectives_in_expectation(estimator, extra):
    """sum over the batches of an epoch of [sum_batch ELBO_n + (B/N)(log p(W) - log q(W))] has the
    expectation of the full-data sum_n ELBO_n - KL(q(W) || p(W))."""
    local_reparam = "false" if estimator == "iwae" else "true"
    cfg, data, model, guide = toy_pair(f"estimator.name={estimator}", f"model.weights.local_reparam={local_reparam}")
    with torch.no_grad():  # a posterior far from the prior, so a wrong KL scale is visible
        for p in guide.weights.raw_scales:
            p.fill_(-4.0)
    est = make_estimator(dict(name=estimator, **extra))
    x = data.train_x

    def bound(xb: torch.Tensor) -> float:
        return -est(model, guide, xb).loss.item()

    diff = torch.tensor([bound(x) - sum(bound(x[i:i + 20]) for i in range(0, 60, 20)) for _ in range(20)])
    kl = weight_kl(model).item()
    assert kl > 100  # the scale matters: counting the KL once per batch would be off by 2 KL
    se = diff.std().item() / math.sqrt(len(diff))
    assert abs(diff.mean().item()) < 4 * se + 1e-6, (diff.mean().item(), se, kl)


def test_iwae_particles_share_one_weight_draw():
    cfg, data, model, guide = toy_pair("estimator.name=iwae", "model.weights.local_reparam=false")
    x = data.train_x[:8]

    def particles(*args):
        with pyro.plate(PARTICLE_PLATE, 5, dim=-2):
            return guide(*args)

    tr = poutine.trace(particles).get_trace(x)
    w = tr.nodes["decoder.0.weight"]["value"]
    assert w.shape == (5, 1, 4, 2) and torch.equal(w, w[:1].expand_as(w))
    assert not torch.equal(tr.nodes["z"]["value"][0], tr.nodes["z"]["value"][1])
    lw = log_weights(model, guide, x, k=5)
    assert torch.equal(lw.global_, lw.global_[:1].expand(5))  # log p(W) - log q(W) enters once, outside logsumexp


def _particles(fn, r: int):
    def vectorized(*args):
        with pyro.plate(PARTICLE_PLATE, r, dim=-2):
            return fn(*args)

    return vectorized


def test_local_reparameterization_keeps_the_expected_likelihood_and_cuts_its_noise():
    """LRT (fresh activations per data point from q's moments) vs one exact weight draw per
    particle: the same E_q(W) log p(x | z, W), with much less spread of the batch sum."""
    data, r = toy_data(n=32), 4000
    _, _, lrt_model, guide = toy_pair("model.weights.local_reparam=true", data=data)
    _, _, exact_model, _ = toy_pair("model.weights.local_reparam=false", data=data)
    exact_model.load_state_dict(lrt_model.state_dict())
    with torch.no_grad():
        for p in guide.weights.raw_scales:
            p.fill_(0.0)  # sd 0.69: weight noise dominates
    x = data.train_x
    z = torch.randn(32, 2, dtype=torch.float64).expand(r, 32, 2)
    guide_tr = poutine.trace(_particles(poutine.condition(guide, data={"z": z}), r)).get_trace(x)
    lrt = poutine.replay(poutine.condition(lrt_model, data={"z": z}), trace=guide_tr)
    q = guide.weights
    draws = {n: q.loc(n) + q.scale(n) * torch.randn((r, 1) + q.loc(n).shape, dtype=torch.float64) for n in q.names}
    exact = poutine.condition(exact_model, data=draws | {"z": z})
    lik = {}
    for name, model in (("lrt", lrt), ("exact", exact)):
        with torch.no_grad():
            tr = poutine.trace(_particles(model, r)).get_trace(x)
        lik[name] = tr.nodes["x"]["fn"].log_prob(x).sum(-1)
        assert lik[name].shape == (r,)
    se = math.hypot(*(v.std().item() / math.sqrt(r) for v in lik.values()))
    assert abs(lik["lrt"].mean() - lik["exact"].mean()) < 4 * se
    assert lik["lrt"].std() < 0.5 * lik["exact"].std()


@pytest.mark.parametrize("estimator", ["iwae", "renyi"])
def test_local_reparameterization_is_refused_where_it_breaks_the_bound(estimator):
    with pytest.raises(ConfigError, match="local_reparam"):
        toy_pair(f"estimator.name={estimator}", "model.weights.local_reparam=true")


@pytest.mark.parametrize("estimator", ["trace", "meanfield", "iwae", "renyi"])
def test_bayesian_decoder_trains_with_every_estimator(estimator):
    lrt = "true" if estimator in ("trace", "meanfield") else "false"
    cfg, data, model, guide = toy_pair(f"estimator.name={estimator}", f"model.weights.local_reparam={lrt}",
                                       "model.weights.prior=scale_mixture")
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x = data.train_x[:20]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.setup(x)
    assert any(name.startswith("guide$$$weights.") for name in trainer.params)
    losses = [trainer.train_step(x).item() for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    if estimator == "meanfield":  # the scale-mixture prior has no closed-form KL: reported, refused with strict
        assert any("Monte Carlo KL" in str(w.message) for w in caught)
        assert "decoder.0.weight" in " ".join(trainer.estimator.notes["kl_monte_carlo_sites"])
        strict = make_estimator(dict(name="meanfield", strict=True))
        with pytest.raises(EstimatorError, match="strict"):
            strict.check(model, guide, x)


def test_model_on_its_own_decodes_with_posterior_means_and_weight_draws_differ():
    cfg, data, model, guide = toy_pair()
    with torch.no_grad():
        for p in guide.weights.raw_scales:
            p.fill_(0.0)
    z = torch.randn(3, 2, dtype=torch.float64)
    mean_weights = {n: guide.weights.loc(n) for n in guide.weights.names}
    tr = poutine.trace(poutine.condition(model, data=mean_weights | {"z": z})).get_trace(data.test_x[:3])
    torch.testing.assert_close(decode_mean(model, z, data.test_x), tr.nodes["x"]["fn"].mean)
    draws = decode_weight_draws(model, guide, z, data.test_x, draws=4)
    assert draws.shape == (4, 3, 6) and (draws[0] - draws[1]).abs().max() > 1e-3


def test_map_initialization_from_a_point_run(tmp_path):
    point = config.load("quickstart", ["model.latent_dim=2", "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]",
                                       "train.epochs=1", "eval.k=5", "data.max_train=200", "data.max_test=40"])
    run_dir = experiment.run(point, out=tmp_path)
    _, _, trainer, _ = experiment.load_run(run_dir)
    point_model, point_guide = trainer.model, trainer.guide
    cfg = config.load("quickstart", ["model.latent_dim=2", "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]",
                                     "data.max_train=200", "model.weights=bayesian", f"model.weights.init={run_dir}",
                                     "model.weights.init_scale=0.01"])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    torch.testing.assert_close(guide.weights.loc("decoder.2.weight"), point_model.decoder[2].weight)
    torch.testing.assert_close(guide.encoder[0].weight, point_guide.encoder[0].weight)
    assert guide.weights.scale("decoder.0.weight").mean().item() == pytest.approx(0.01)
    z = torch.randn(5, 2)
    torch.testing.assert_close(decode_mean(model, z, data.test_x), decode_mean(point_model, z, data.test_x))
    wrong = config.load("quickstart", ["model.latent_dim=3", "model.weights=bayesian", f"model.weights.init={run_dir}"])
    with pytest.raises(ConfigError, match="different architecture"):
        build_pair(wrong, data)


def test_pointwise_log_likelihood_matrix():
    cfg, data, model, guide = toy_pair()
    with torch.no_grad():
        for p in guide.weights.raw_scales:
            p.fill_(-1.0)
    ll = pointwise_log_likelihood(model, guide, data.test_x, draws=6, k=50)
    assert ll.shape == (6, 10) and torch.isfinite(ll).all()
    # rows differ by weight draw; with the draws held fixed a row is an ordinary IWAE bound (< 0 for binary data)
    assert (ll < 0).all() and ll.std(0).mean() > 1e-2


def test_weight_draws_decode_with_fixed_weights_under_local_reparameterization():
    """Each draw is one fixed decoder, the last one included: the same z decodes to the same image
    (local-reparameterization noise, fresh per data point, would make the copies differ)."""
    cfg, data, model, guide = toy_pair("model.weights.local_reparam=true")
    with torch.no_grad():
        for p in guide.weights.raw_scales:
            p.fill_(0.0)
    z = torch.randn(1, 2, dtype=torch.float64).expand(3, 2)
    draws = decode_weight_draws(model, guide, z, data.test_x, draws=3)
    torch.testing.assert_close(draws, draws[:, :1].expand_as(draws), rtol=0, atol=0)
    assert (draws[0] - draws[-1]).abs().max() > 1e-3


def test_iwae_with_global_weights_is_a_bound_that_tends_to_the_weight_elbo():
    """x_n = w z_n + noise with a global w and local z_n: log p(x_n | w) = log N(x_n; 0, w^2 + s^2) and
    log p(X) are exact by quadrature over w. IWAE_k over z with log p(w) - log q(w) once, outside the
    logsumexp, lies below log p(X), grows with k, and tends to E_q(w) log p(X | w) - KL(q(w) || p(w))."""
    x = torch.tensor([[0.3], [-1.4], [2.0], [0.8]], dtype=torch.float64)
    noise, q_loc, q_scale = 0.5, 1.5, 0.2  # q(w) off the posterior: a KL of a few nats

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(w * z, noise).to_event(1), obs=x)

    def guide(x, y=None, share=True):
        q = dist.Normal(x.new_full((1,), q_loc), q_scale).to_event(1)
        with Preset({"w": q.sample().expand(plate_shape() + (1,))} if share else {}):  # one w for all k samples
            pyro.sample("w", q)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.4 * x, 0.8).to_event(1))

    w = torch.linspace(-8, 8, 160_001, dtype=torch.float64)
    log_lik = dist.Normal(0.0, (w**2 + noise**2).sqrt()[:, None]).log_prob(x[:, 0]).sum(-1)  # log p(X | w)
    log_px = torch.logsumexp(log_lik + dist.Normal(0.0, 1.0).log_prob(w), 0) + math.log(w[1] - w[0])
    q = dist.Normal(q_loc, q_scale)
    limit = torch.trapezoid(q.log_prob(w).exp() * log_lik, w) - torch.distributions.kl_divergence(
        q, dist.Normal(0.0, 1.0))
    means = []
    for k in (1, 10, 2000):
        est = make_estimator(dict(name="iwae", k=k))
        with torch.no_grad():
            bounds = torch.tensor([-est(model, guide, x).loss.item() for _ in range(400)])
        se = bounds.std().item() / math.sqrt(len(bounds))
        assert bounds.mean().item() < log_px.item() + 3 * se
        means.append((bounds.mean().item(), se))
    assert means[0][0] < means[1][0] < means[2][0]
    assert log_px.item() - limit.item() > 1.0  # the weight KL matters, so counting it wrongly would show
    assert means[2][0] == pytest.approx(limit.item(), abs=4 * means[2][1] + 0.02)
    # a w drawn anew for each sample makes the same objective no bound: refused before training
    with pytest.raises(EstimatorError, match="share the draw"):
        make_estimator(dict(name="iwae", k=10)).check(model, partial(guide, share=False), x)
