"""Every estimator against the exact log p(x) of a linear-Gaussian model."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import amortized_guide, exact_guide, problem
from ppvae.models import ppca

from ppvae.errors import EstimatorError
from ppvae.infer.estimators import make_estimator
from ppvae.infer.importance import iwae_bound, log_weights

ESTIMATOR_CONFIGS = {
    "trace": dict(name="trace", num_particles=4),
    "meanfield": dict(name="meanfield", num_particles=4),
    "renyi(0.5)": dict(name="renyi", alpha=0.5, num_particles=4),
    "renyi(0)": dict(name="renyi", alpha=0.0, num_particles=4),
    "iwae": dict(name="iwae", k=4),
}


def bound_per_point(cfg, model, guide, x) -> float:
    """The estimator's bound averaged over data points (a loss is -bound summed over the batch)."""
    return -make_estimator(cfg)(model, guide, x).loss.item() / x.shape[0]


@pytest.mark.parametrize("name", ESTIMATOR_CONFIGS)
def test_exact_posterior_guide_gives_log_px(name):
    model, p, x = problem()
    exact = ppca.exact_log_likelihood(x, p).mean().item()
    tol = 1e-5 if name.startswith("renyi") else 1e-10  # Pyro's RenyiELBO returns a float32 loss
    assert bound_per_point(ESTIMATOR_CONFIGS[name], model, exact_guide(p), x) == pytest.approx(exact, abs=tol)


@pytest.mark.parametrize("k", [1, 2, 10, 100])
def test_exact_posterior_every_k_per_datapoint(k):
    model, p, x = problem()
    bound = iwae_bound(log_weights(model, exact_guide(p), x, k=k))
    torch.testing.assert_close(bound, ppca.exact_log_likelihood(x, p), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ESTIMATOR_CONFIGS)
def test_bounds_lie_below_log_px(name):
    model, p, x = problem(n=200)
    guide = amortized_guide(p, scale_factor=0.6, loc_noise=0.2)
    exact = ppca.exact_log_likelihood(x, p).mean().item()
    draws = torch.tensor([bound_per_point(ESTIMATOR_CONFIGS[name], model, guide, x) for _ in range(20)])
    se = draws.std().item() / math.sqrt(len(draws))
    assert draws.mean().item() < exact - 3 * se, (draws.mean().item(), exact)


def test_iwae_increases_with_k_towards_log_px():
    model, p, x = problem(n=200)
    guide = amortized_guide(p, scale_factor=1.0, loc_noise=0.1)
    exact = ppca.exact_log_likelihood(x, p)
    gaps = torch.stack([exact - iwae_bound(log_weights(model, guide, x, k=k)) for k in (1, 5, 50, 500, 5000)])
    se = lambda t: t.std().item() / math.sqrt(len(t))  # noqa: E731  (paired over data points)
    for smaller_k, larger_k in zip(gaps, gaps[1:]):
        assert (smaller_k - larger_k).mean().item() > -2 * se(smaller_k - larger_k)
    assert all(g.mean().item() > -3 * se(g) for g in gaps)  # a bound: never above log p(x)
    assert gaps[0].mean().item() > 1.0  # the guide is poor enough for k to matter ...
    assert gaps[-1].mean().item() < 0.05  # ... and k = 5000 closes almost all of the gap


def test_meanfield_closed_form_kl_matches_trace_in_expectation():
    model, p, x = problem(n=200)
    guide = amortized_guide(p, scale_factor=0.8, loc_noise=0.1)
    mf = bound_per_point(dict(name="meanfield", num_particles=1), model, guide, x)
    tr = torch.tensor([bound_per_point(dict(name="trace", num_particles=10), model, guide, x)
                       for _ in range(10)])
    assert mf == pytest.approx(tr.mean().item(), abs=4 * tr.std().item() / math.sqrt(10) + 1e-3)


def test_beta_weights_only_the_kl():
    model, p, x = problem(n=50)
    guide = amortized_guide(p, scale_factor=0.8, loc_noise=0.1)
    for name in ("trace", "iwae"):
        pyro.set_rng_seed(3)
        lw = log_weights(model, guide, x, k=1)
        pyro.set_rng_seed(3)
        got = bound_per_point(dict(name=name, beta=2.5) | ({"k": 1} if name == "iwae" else {}), model, guide, x)
        assert got == pytest.approx((lw.obs + 2.5 * lw.latent).mean().item(), abs=1e-10)


def test_iwae_refuses_non_reparameterized_local_latent():
    model, p, x = problem(n=8)

    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1))

    class NoRsample(dist.Normal):
        has_rsample = False

    def bad_guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", NoRsample(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1))

    make_estimator(dict(name="iwae")).check(model, guide, x)
    with pytest.raises(EstimatorError, match="no reparameterized sampler"):
        make_estimator(dict(name="iwae")).check(model, bad_guide, x)


def test_iwae_needs_a_data_plate():
    model, p, x = problem(n=8)

    def model_without_plate(x, y=None):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(2))
        pyro.sample("x", dist.Normal(z @ p.W.T, 1.0).to_event(2), obs=x)

    def guide_without_plate(x, y=None):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(2))

    with pytest.raises(EstimatorError, match="plate"):
        make_estimator(dict(name="iwae")).check(model_without_plate, guide_without_plate, x)


def test_iwae_scale_stays_outside_logsumexp():
    """With a subsampling scale s, the bound is s * sum_n IWAE_n, not IWAE of scaled weights."""
    model, p, x = problem(n=16)
    guide = amortized_guide(p, scale_factor=0.7, loc_noise=0.1)
    scaled = pyro.poutine.scale(scale=3.0)
    pyro.set_rng_seed(5)
    lw = log_weights(scaled(model), scaled(guide), x, k=20)
    pyro.set_rng_seed(5)
    plain = iwae_bound(log_weights(model, guide, x, k=20))
    assert lw.scale == 3.0
    torch.testing.assert_close(iwae_bound(lw), plain)


def test_meanfield_reports_monte_carlo_fallback():
    model, p, x = problem(n=8)
    guide = exact_guide(p)  # MultivariateNormal || Independent(Normal): no closed form registered
    est = make_estimator(dict(name="meanfield"))
    with pytest.warns(UserWarning, match="Monte Carlo KL"):
        est.check(model, guide, x)
    assert est.notes["kl_monte_carlo_sites"] == ["z: MultivariateNormal || Normal"]
    with pytest.raises(EstimatorError, match="strict"):
        make_estimator(dict(name="meanfield", strict=True)).check(model, guide, x)


# ---------------------------------------------------------------------------- gradient estimators


def _gradients(model, guide, x, cfg, seeds):
    """Per-draw gradients of the loss, split into decoder (model) and encoder (guide) vectors."""
    est = make_estimator(cfg)
    dec, enc = [], []
    for s in seeds:
        pyro.set_rng_seed(s)
        model.zero_grad()
        guide.zero_grad()
        est(model, guide, x).surrogate.backward()
        dec.append(torch.cat([q.grad.flatten() for q in model.parameters()]))
        enc.append(torch.cat([q.grad.flatten() for q in guide.parameters()]))
    return torch.stack(dec), torch.stack(enc)


def test_iwae_gradient_estimators_agree_on_decoder_and_stl_dreg_reduce_encoder_variance():
    model, p, x = problem(n=32)
    guide = amortized_guide(p, scale_factor=0.9, loc_noise=0.05)
    seeds = range(300)
    grads = {g: _gradients(model, guide, x, dict(name="iwae", k=10, gradient=g), seeds)
             for g in ("standard", "stl", "dreg")}
    dec_mean = {g: d.mean(0) for g, (d, _) in grads.items()}
    dec_se = grads["standard"][0].std(0) / math.sqrt(len(seeds))
    for g in ("stl", "dreg"):
        assert ((dec_mean[g] - dec_mean["standard"]).abs() <= 4 * dec_se + 1e-8).all()
    enc_var = {g: e.var(0).sum().item() for g, (_, e) in grads.items()}
    assert enc_var["stl"] < 0.5 * enc_var["standard"], enc_var
    assert enc_var["dreg"] < 0.5 * enc_var["standard"], enc_var
    enc_mean = {g: e.mean(0) for g, (_, e) in grads.items()}
    enc_se = grads["standard"][1].std(0) / math.sqrt(len(seeds))
    assert ((enc_mean["dreg"] - enc_mean["standard"]).abs() <= 4 * enc_se + 1e-6).all()


def test_stl_is_unbiased_at_one_sample_and_biased_above_and_says_so():
    """Tucker et al. (2019): the term STL drops from the IWAE gradient vanishes in expectation only at k = 1.
    On the oracle, STL's mean encoder gradient against the standard one's, in standard errors of the difference."""
    model, p, x = problem(n=32)
    guide = amortized_guide(p, scale_factor=0.9, loc_noise=0.05)
    seeds = range(300)
    z = {}
    for k in (1, 10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = make_estimator(dict(name="iwae", k=k, gradient="stl"))
        assert any("biased" in str(w.message) for w in caught) == (k > 1)
        assert ("biased_gradient" in est.notes) == (k > 1)
        _, standard = _gradients(model, guide, x, dict(name="iwae", k=k), seeds)
        _, stl = _gradients(model, guide, x, dict(name="iwae", k=k, gradient="stl"), seeds)
        se = ((standard.var(0) + stl.var(0)) / len(seeds)).sqrt()
        z[k] = ((stl.mean(0) - standard.mean(0)).abs() / (se + 1e-12)).max().item()
    assert z[1] < 5 and z[10] > 10, z
