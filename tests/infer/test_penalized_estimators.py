"""DIP-VAE and WAE-MMD: each objective is its reconstruction / ELBO term plus its penalty, computed by hand on a
linear-Gaussian pair, and the MMD estimate is unbiased."""

import math

import pyro
import pytest
import torch
from linear_gaussian import amortized_guide, exact_guide, problem
from ppvae.guides import VAEGuide
from ppvae.guides.families.delta import PointMass
from ppvae.models import ppca
from torch import nn

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.errors import EstimatorError
from ppvae.infer import fast
from ppvae.infer.estimators import make_estimator
from ppvae.infer.estimators.dip_vae import code_covariance, dip_penalty
from ppvae.infer.estimators.wae import imq_mmd


def same_draws(estimator, model, guide, x, seed=0):
    pyro.set_rng_seed(seed)
    return estimator(model, guide, x).loss.item()


@pytest.mark.parametrize("kind", ["i", "ii"])
@pytest.mark.parametrize("path", ["fast", "generic"])
def test_dip_vae_is_the_meanfield_elbo_plus_the_covariance_penalty(kind, path):
    model, p, x = problem(n=100)
    guide = amortized_guide(p, scale_factor=0.7, loc_noise=0.2)
    with (fast.generic_path() if path == "generic" else torch.enable_grad()):
        elbo = same_draws(make_estimator("meanfield"), model, guide, x)
        dip = same_draws(make_estimator({"name": "dip_vae", "kind": kind, "lambda_od": 3.0, "lambda_d": 7.0}),
                         model, guide, x)
    q = guide.posterior(x)
    mu = q.mean
    cov = (mu - mu.mean(0)).T @ (mu - mu.mean(0)) / len(x)
    if kind == "ii":
        cov = cov + torch.diag(q.variance.mean(0))
    off = cov - torch.diag(torch.diagonal(cov))
    by_hand = 3.0 * off.pow(2).sum() + 7.0 * (torch.diagonal(cov) - 1).pow(2).sum()
    assert dip - elbo == pytest.approx(len(x) * by_hand.item(), rel=1e-9)


def test_the_dip_penalty_vanishes_only_at_the_priors_covariance():
    assert dip_penalty(torch.eye(3), torch.ones(3), 10.0, 100.0).item() == 0.0
    assert dip_penalty(torch.tensor([[1.0, 0.1], [0.1, 1.0]]), torch.ones(2), 10.0, 100.0).item() == pytest.approx(0.2)
    assert dip_penalty(torch.diag(torch.tensor([3.0, 3.0])), torch.full((2,), 3.0), 10.0, 100.0).item() == 0.0
    q = torch.distributions.Independent(torch.distributions.Normal(torch.randn(500, 2), torch.full((500, 2), 0.5)), 1)
    z = q.sample()
    extra = torch.diagonal(code_covariance(q, z, "ii") - code_covariance(q, z, "i"))
    assert torch.allclose(extra, torch.full((2,), 0.25))


def brute_force_mmd(a, b, c):
    k = lambda u, v: sum(c * s / (c * s + (u - v).pow(2).sum()) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))  # noqa: E731
    n = len(a)
    within = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return within - 2 * sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / n**2


def test_the_mmd_is_the_unbiased_estimate_and_is_zero_in_expectation_for_equal_laws():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(12, 3, generator=g, dtype=torch.float64)
    assert imq_mmd(a, b, 6.0).item() == pytest.approx(brute_force_mmd(a, b, 6.0).item(), rel=1e-10)
    same = torch.stack([imq_mmd(torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g), 8.0)
                        for _ in range(400)])
    shifted = torch.stack([imq_mmd(torch.randn(50, 4, generator=g) + 0.5, torch.randn(50, 4, generator=g), 8.0)
                           for _ in range(50)])
    se = same.std() / math.sqrt(len(same))
    assert abs(same.mean()) < 3 * se  # an unbiased estimate of MMD^2 = 0 (a biased one sits above 0)
    assert shifted.mean() > 20 * se


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_wae_is_the_squared_error_plus_the_weighted_mmd(path):
    model, p, x = problem(n=64)
    encoder = nn.Linear(x.shape[1], 2).double()
    guide = VAEGuide(encoder, PointMass(2))
    with (fast.generic_path() if path == "generic" else torch.enable_grad()):
        recon = same_draws(make_estimator({"name": "wae_mmd", "weight": 0.0}), model, guide, x)
        wae = same_draws(make_estimator({"name": "wae_mmd", "weight": 4.0, "beta": 0.5}), model, guide, x)
    z = encoder(x).detach()
    mean = model.decoder(z).detach()
    by_hand = ((x - mean).pow(2).sum() / (2 * 0.25) + x.numel() * math.log(0.5 * math.sqrt(2 * math.pi))).item()
    assert recon == pytest.approx(by_hand, rel=1e-9)  # -log p(x | z = encoder(x)) with sigma = 0.5
    pyro.set_rng_seed(0)  # a point-mass guide draws nothing: the prior's draws are the first
    drawn = torch.randn(64, 2, dtype=torch.float64)
    assert wae - recon == pytest.approx(0.5 * 4.0 * 64 * imq_mmd(z, drawn, 4.0).item(), rel=1e-6)


@pytest.mark.parametrize("overrides, fragment", [
    (["estimator.name=wae_mmd", "model.top_latent_dim=2"], "one local latent z"),
    (["estimator.name=dip_vae", "model.weights={name = \"bayesian\", local_reparam = false}"], "one local latent z"),
])
def test_pairs_the_penalties_cannot_score_are_refused_before_training(overrides, fragment):
    cfg = config.load("quickstart", overrides)
    data = load_dataset("digits", max_train=16)
    model, guide = build_pair(cfg, data)
    x = data.train_x[:8]
    with pytest.raises(EstimatorError, match=fragment):
        make_estimator(cfg.estimator).check(model, guide, x)


def test_dip_vae_says_when_it_falls_back_to_draws_and_a_monte_carlo_kl():
    """A flow has no closed-form mean, variance or KL: the penalty takes the draws' covariance, the ELBO the
    Monte Carlo KL, and both are warned about and recorded."""
    cfg = config.load("quickstart", ["estimator.name=dip_vae", "guide.family=flow"])
    data = load_dataset("digits", max_train=16)
    model, guide = build_pair(cfg, data)
    estimator = make_estimator(cfg.estimator)
    with pytest.warns(UserWarning, match="draws"):
        estimator.check(model, guide, data.train_x[:8])
    assert estimator.notes == {"dip_covariance": "draws", "kl": "Monte Carlo"}
    z = torch.randn(200, 3, dtype=torch.float64)
    flow_like = torch.distributions.TransformedDistribution(torch.distributions.Normal(torch.zeros(3), 1.0), [])
    assert torch.allclose(code_covariance(flow_like, z, "i"), torch.cov(z.T, correction=0))


def test_ppca_exactness_is_untouched_by_a_zero_penalty():
    """With both weights 0, DIP-VAE is the meanfield ELBO: exact for the exact posterior."""
    model, p, x = problem()
    loss = make_estimator({"name": "dip_vae", "lambda_od": 0.0, "lambda_d": 0.0})(model, exact_guide(p), x).loss
    assert -loss.item() / len(x) == pytest.approx(ppca.exact_log_likelihood(x, p).mean().item(), abs=1e-10)


def pixel_plate_pair(scale: float = 1.0):
    """A pair with the data plate at dim -2 and a pixel plate at -1: z [N, 1, d], x [N, D] scored per pixel."""
    dec, enc = nn.Linear(2, 3).double(), nn.Linear(3, 4).double()

    def model(x, y=None):
        with pyro.poutine.scale(scale=scale), pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2).double(), 1.0).to_event(1))
            with pyro.plate("pixels", x.shape[1], dim=-1):
                pyro.sample("x", pyro.distributions.Normal(dec(z.squeeze(-2)), 0.5), obs=x)

    def guide(x, y=None):
        pyro.module("enc", enc)
        loc, log_scale = enc(x).chunk(2, -1)
        with pyro.poutine.scale(scale=scale), pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", pyro.distributions.Normal(loc[:, None], log_scale.exp()[:, None]).to_event(1))

    return model, guide


def test_one_draw_reduces_every_site_to_one_term_per_point_and_refuses_a_scaled_pair():
    """obs, log p(z) and log q(z|x) each [1, N] whatever plates the pair uses, so the one-draw ELBO is Pyro's."""
    from ppvae.infer.estimators.base import one_draw

    x = torch.randn(6, 3, dtype=torch.float64)
    model, guide = pixel_plate_pair()
    pyro.set_rng_seed(0)
    d = one_draw(model, guide, x)
    assert d.obs.shape == d.log_p.shape == d.log_q.shape == (1, 6)
    pyro.set_rng_seed(0)
    pyro_loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)
    assert (-(d.obs + d.log_p - d.log_q).sum()).item() == pytest.approx(pyro_loss.item(), rel=1e-12)
    with pytest.raises(EstimatorError, match="unscaled batches"):
        one_draw(*pixel_plate_pair(scale=10.0), x)
