"""Sparse Beta and mixture priors, Beta / Kumaraswamy / low-rank / flow guides: the closed-form
KLs, numerics on the unit interval, and short training runs with every estimator."""

import dataclasses
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import betainc

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.errors import ConfigError, EstimatorError
from ppvae.estimators import make_estimator
from ppvae.evaluate import evaluate
from ppvae.importance import log_weights
from ppvae.guides import FAMILIES, InverseAutoregressiveFlow, LowRankNormal
from ppvae.models import LIKELIHOODS, PRIORS
from ppvae.models.distributions import LogitBeta, LogitKumaraswamy
from ppvae.train import Trainer

# (prior, guide family) -> is there a closed-form KL for meanfield?
PAIRS = {
    ("beta", "beta"): True,
    ("beta", "kumaraswamy"): True,
    ("mixture01", "normal"): False,
    ("mixture", "normal"): False,
    ("normal", "lowrank"): True,
    ("normal", "flow"): False,
}
ESTIMATORS = ["trace", "meanfield", "iwae", "renyi"]
SMALL = ["model.latent_dim=3", "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]", "data.max_train=64"]


def test_registries_match_config_choices():
    fields = {f.name: f for f in dataclasses.fields(config.ModelConfig)}
    assert tuple(PRIORS) == fields["prior"].metadata["choices"]
    assert tuple(LIKELIHOODS) == fields["likelihood"].metadata["choices"]
    fields = {f.name: f for f in dataclasses.fields(config.GuideConfig)}
    assert tuple(FAMILIES) == fields["family"].metadata["choices"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(config.load("quickstart", SMALL).data)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("prior, family", list(PAIRS))
def test_pair_trains_with_each_estimator(digits, prior, family, estimator):
    cfg = config.load("quickstart", [*SMALL, f"model.prior={prior}", f"guide.family={family}",
                                     f"estimator.name={estimator}", "estimator.k=3"])
    model, guide = build_pair(cfg, digits)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(digits.batches(32, shuffle=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.setup(x)
    before = {name: p.detach().clone() for name, p in trainer.params.items()}
    losses = [trainer.train_step(x).item() / 32 for _ in range(3)]
    assert all(math.isfinite(v) and 0 < v < 200 for v in losses), losses
    assert any(not torch.equal(before[n], p) for n, p in trainer.params.items() if n.startswith("model"))
    if estimator != "meanfield":
        return
    fallback = trainer.estimator.notes["kl_monte_carlo_sites"]
    if PAIRS[prior, family]:
        assert fallback == [] and not any("Monte Carlo KL" in str(w.message) for w in caught)
    else:  # no closed form: the fallback is visible, and strict refuses it
        assert [s.split(":")[0] for s in fallback] == ["z"]
        assert any("Monte Carlo KL" in str(w.message) for w in caught)
        strict = make_estimator(dataclasses.replace(cfg.estimator, strict=True))
        with pytest.raises(EstimatorError, match="strict"):
            strict.check(model, guide, x)


def test_learned_mixture_prior_is_trained(digits):
    cfg = config.load("quickstart", [*SMALL, "model.prior=mixture", "model.prior_components=4"])
    model, guide = build_pair(cfg, digits)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(digits.batches(32, shuffle=False))
    trainer.setup(x)
    assert {"model$$$prior.logits", "model$$$prior.locs", "model$$$prior.log_scales"} <= set(trainer.params)
    locs = model.prior.locs.detach().clone()
    trainer.train_step(x)
    assert not torch.equal(locs, model.prior.locs)


@pytest.mark.parametrize("family", ["normal", "lowrank", "flow", "delta"])
def test_beta_prior_needs_a_guide_on_the_unit_interval(digits, family):
    cfg = config.load("quickstart", [*SMALL, "model.prior=beta", f"guide.family={family}"])
    with pytest.raises(ConfigError, match="beta.*kumaraswamy"):
        build_pair(cfg, digits)


@pytest.mark.parametrize("prior", ["normal", "mixture01"])
def test_code_guides_need_the_beta_prior(digits, prior):
    cfg = config.load("quickstart", [*SMALL, f"model.prior={prior}", "guide.family=kumaraswamy"])
    with pytest.raises(ConfigError, match="pairs with model.prior = 'beta'"):
        build_pair(cfg, digits)


def test_beta_prior_decoder_reads_codes_on_the_unit_interval(digits):
    cfg = config.load("quickstart", [*SMALL, "model.prior=beta", "guide.family=beta"])
    model, _ = build_pair(cfg, digits)
    z = torch.tensor([[-500.0, 0.0, 500.0]])
    torch.testing.assert_close(model.decoder[0](z), torch.tensor([[0.0, 0.5, 1.0]]))


@pytest.mark.parametrize("cls", [LogitBeta, LogitKumaraswamy])
def test_logit_draws_and_densities_are_exact_where_codes_round_to_0_or_1(cls):
    """Concentrations far below 1 put most codes within float32 rounding of 0 or 1; in logit
    coordinates the draws stay finite, the density integrates to one and matches the draws."""
    conc = torch.tensor([1e-3, 0.05, 0.2, 1.0, 30.0])
    u = cls(conc[:, None], conc[None, :]).rsample((2000,))
    assert torch.isfinite(u).all() and torch.isfinite(cls(conc[:, None], conc[None, :]).log_prob(u)).all()
    assert (torch.sigmoid(u) == 0).any() and (torch.sigmoid(u) == 1).any()  # what a value in (0, 1) could not hold
    a, b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64)
    d = cls(a, b)
    grid = torch.linspace(-600, 600, 600_001, dtype=torch.float64)
    assert torch.trapezoid(d.log_prob(grid).exp(), grid).item() == pytest.approx(1.0, abs=1e-3)
    below = (d.sample((200_000,)) < math.log(0.3 / 0.7)).double().mean().item()  # P(code < 0.3)
    cdf = 1 - (1 - 0.3**a) ** b if cls is LogitKumaraswamy else betainc(float(a), float(b), 0.3)
    assert below == pytest.approx(float(cdf), abs=4e-3)


@pytest.mark.parametrize("a, b, alpha, beta", [
    (0.5, 0.5, 0.2, 0.2), (2.0, 0.3, 0.2, 0.2), (0.3, 3.0, 0.5, 0.8), (5.0, 2.0, 1.0, 1.0), (1.0, 1.0, 0.1, 0.3),
    (12.0, 0.8, 0.2, 0.2), (0.2, 50.0, 0.2, 0.2), (0.05, 5.0, 0.2, 0.2),
])
def test_kumaraswamy_beta_kl_matches_monte_carlo(a, b, alpha, beta):
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    q, p = LogitKumaraswamy(f64(a), f64(b)), LogitBeta(f64(alpha), f64(beta))
    closed = torch.distributions.kl_divergence(q, p).item()
    u = q.sample((200_000,))
    log_ratio = q.log_prob(u) - p.log_prob(u)
    se = log_ratio.std().item() / math.sqrt(len(u))
    assert closed == pytest.approx(log_ratio.mean().item(), abs=4 * se + 1e-3), (closed, log_ratio.mean().item(), se)
    # the same closed form is registered for torch's own classes
    plain = torch.distributions.kl_divergence(torch.distributions.Kumaraswamy(f64(a), f64(b)),
                                              torch.distributions.Beta(f64(alpha), f64(beta)))
    assert plain.item() == pytest.approx(closed)


def test_kumaraswamy_beta_kl_is_differentiable_and_zero_where_they_coincide():
    # Kumaraswamy(1, b) = Beta(1, b): the KL vanishes there
    b = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    kl = torch.distributions.kl_divergence(LogitKumaraswamy(torch.ones_like(b), b), LogitBeta(torch.ones_like(b), b.detach()))
    torch.testing.assert_close(kl, torch.zeros_like(kl), atol=1e-6, rtol=0)
    kl.sum().backward()
    assert torch.isfinite(b.grad).all()


def test_lowrank_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    loc, factor = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    q = dist.LowRankMultivariateNormal(loc, factor, torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1)
    p = dist.Normal(torch.zeros(5, dtype=torch.float64), torch.full((5,), 1.5, dtype=torch.float64)).to_event(1)
    closed = torch.distributions.kl_divergence(q, p)
    full = dist.MultivariateNormal(p.base_dist.loc, torch.diag(p.base_dist.scale**2))
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, full))


def test_lowrank_guide_stays_finite_for_small_posterior_scales():
    """Posterior sds of 1e-3 with a large factor: float32 log-densities still match float64 ones."""
    family = LowRankNormal(latent_dim=16, rank=16)
    raw_scale = torch.full((4, 16), -7.0)  # softplus(-7) ~ 1e-3
    q = family(torch.cat([torch.zeros(4, 16), raw_scale, torch.randn(4, 16 * 16) * 30], -1))
    z = q.rsample()
    exact = dist.MultivariateNormal(q.loc.double(), q.covariance_matrix.double()).log_prob(z.double())
    torch.testing.assert_close(q.log_prob(z).double(), exact, rtol=1e-3, atol=0.05)


def test_flow_guide_scores_its_own_draws_like_fresh_points():
    """The IAF caches its inputs when sampling; scoring a copy of a draw inverts the layers instead."""
    pyro.set_rng_seed(1)
    family = InverseAutoregressiveFlow(latent_dim=4, layers=2, hidden=[16], context=8)
    q = family(torch.randn(6, family.outputs))
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), atol=1e-4, rtol=1e-4)
    assert q.batch_shape == (6,) and q.event_shape == (4,)


@pytest.mark.parametrize("family", ["normal", "lowrank", "flow"])
def test_stl_log_q_carries_only_the_path_gradient(digits, family):
    """STL / DReG score each draw with the guide's parameters detached: the gradient of the log
    weight reaches the encoder only through z, d/dphi [log p(z) - log q(z)] = grad_z(...) dz/dphi."""
    cfg = config.load("quickstart", [*SMALL, f"guide.family={family}"])
    model, guide = build_pair(cfg, digits)
    x, _ = next(digits.batches(5, shuffle=False))
    pyro.set_rng_seed(0)
    w = log_weights(model, guide, x, k=2, detach_guide_params=True)
    (z,) = w.guide_values
    params = [p for p in guide.parameters() if p.requires_grad]
    got = torch.autograd.grad(w.latent.sum(), params, allow_unused=True, retain_graph=True)
    fresh = z.detach().requires_grad_(True)  # a copy: the flow inverts its layers, no cached input
    latent = model.prior().log_prob(fresh) - guide.posterior(x).log_prob(fresh)
    (dz,) = torch.autograd.grad(latent.sum(), fresh)
    want = torch.autograd.grad(z, params, grad_outputs=dz, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in got)
    for g, ref in zip(got, want):
        torch.testing.assert_close(g if g is not None else torch.zeros_like(ref),
                                   ref if ref is not None else torch.zeros_like(g), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("prior, family", [*PAIRS, ("bayesian", "normal")])
def test_evaluated_nll_is_sane_for_every_pair(digits, prior, family):
    """After a few steps every pair's test NLL (IWAE k = 64) lies below minus its ELBO and below the 64 ln 2 nats
    of a coin per pixel (plus slack): an evaluation that mis-scores a prior, guide or weight draw
    lands far outside (e.g. thousands of nats)."""
    weights = ["model.weights=bayesian"] if prior == "bayesian" else [f"model.prior={prior}"]
    cfg = config.load("quickstart", [*SMALL, *weights, f"guide.family={family}"])
    pyro.set_rng_seed(0)
    model, guide = build_pair(cfg, digits)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(digits.batches(64, shuffle=False))
    trainer.setup(x)
    for _ in range(30):
        trainer.train_step(x)
    m = evaluate(model, guide, digits.test_x[:50], k=64, seed=0)
    assert 0 < m["test_nll"] <= -m["test_elbo"] and m["test_nll"] < 64 * math.log(2) + 15, m
