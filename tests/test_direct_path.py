"""The direct path (ppvae.importance) computes what the generic Pyro path computes.

For the pairs the library builds, log-weights, every estimator's loss and gradients, and
the evaluator's numbers must agree with the generic path to float64 rounding; any other
pair, or a library pair under a Pyro handler, must take the generic path.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import exact_guide, problem
from torch import nn

from ppvae import config
from ppvae.build import build_pair
from ppvae.config import EstimatorConfig
from ppvae.data import load_dataset
from ppvae.estimators import make_estimator
from ppvae.evaluate import log_likelihood
from ppvae.importance import direct_pair, generic_path, log_weights
from ppvae.models import StandardNormal, VAEModel

LIBRARY_PAIRS = {
    "bernoulli-normal-normal": [],
    "learned-sigma-mixture-lowrank": ["model.likelihood=gaussian_learned", "model.prior=mixture",
                                      "guide.family=lowrank"],
    "beta-beta": ["model.prior=beta", "guide.family=beta"],
    "beta-kumaraswamy": ["model.prior=beta", "guide.family=kumaraswamy"],
    "flow": ["guide.family=flow"],
    "delta": ["guide.family=delta"],
    "meanvar": ["model.likelihood=gaussian_meanvar"],
    "conditional": ["model.conditional=true"],
    "cnn": ["model.decoder.kind=cnn", "guide.encoder.kind=cnn"],
}
OTHER_PAIRS = {
    "two-layer": ["model.top_latent_dim=2"],
    "denoising": ["guide.noise=0.1"],
    "bayesian-decoder": ["model.weights=bayesian"],
}
ESTIMATORS = [
    EstimatorConfig(name="trace", num_particles=2),
    EstimatorConfig(name="meanfield"),
    EstimatorConfig(name="meanfield", num_particles=3, beta=0.5),
    EstimatorConfig(name="iwae", k=3),
    EstimatorConfig(name="iwae", k=3, gradient="stl"),
    EstimatorConfig(name="iwae", k=3, gradient="dreg", beta=2.0),
]


def library_pair(overrides: list[str]):
    """A pair from build_pair on the embedded digits, in float64, and a batch (x, y)."""
    cfg = config.load("quickstart", ["data.max_train=64", "model.latent_dim=3", *overrides])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    y = None if data.train_y is None else data.train_y[:16]
    return model.double(), guide.double(), data.train_x[:16].double(), y


def loss_and_grads(est, model, guide, x, y, seed: int):
    params = [p for p in (*model.parameters(), *guide.parameters())]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    obj = est(model, guide, x, y)
    obj.surrogate.backward()
    return obj.loss, [torch.zeros_like(p) if p.grad is None else p.grad for p in params]


@pytest.mark.parametrize("name", LIBRARY_PAIRS)
def test_library_pairs_take_the_direct_path_with_the_same_log_weights(name):
    model, guide, x, y = library_pair(LIBRARY_PAIRS[name])
    assert direct_pair(model, guide, x, y)
    pyro.set_rng_seed(1)
    direct = log_weights(model, guide, x, y, k=4, beta=0.7)
    pyro.set_rng_seed(1)
    with generic_path():
        generic = log_weights(model, guide, x, y, k=4, beta=0.7)
    torch.testing.assert_close(direct.obs, generic.obs, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(direct.latent, generic.latent, rtol=1e-12, atol=1e-10)
    assert direct.scale == generic.scale


@pytest.mark.parametrize("name", ["bernoulli-normal-normal", "learned-sigma-mixture-lowrank", "beta-beta", "flow"])
@pytest.mark.parametrize("cfg", ESTIMATORS, ids=lambda c: f"{c.name}-{c.gradient}-{c.num_particles}-{c.beta}")
def test_estimators_agree_on_loss_and_gradients(name, cfg):
    model, guide, x, y = library_pair(LIBRARY_PAIRS[name])
    est, ref = make_estimator(cfg), make_estimator(cfg)
    with generic_path():
        ref(model, guide, x, y)  # Pyro guesses max_plate_nesting on its first call, drawing samples
        ref_loss, ref_grads = loss_and_grads(ref, model, guide, x, y, seed=2)
    loss, grads = loss_and_grads(est, model, guide, x, y, seed=2)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-9)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_evaluator_gives_the_same_numbers_on_both_paths():
    model, guide, x, y = library_pair([])
    direct = log_likelihood(model, guide, x, y, k=70, chunk_size=16, seed=3)
    with generic_path():
        generic = log_likelihood(model, guide, x, y, k=70, chunk_size=16, seed=3)
    for key in ("ll", "elbo", "recon", "kl"):
        torch.testing.assert_close(direct[key], generic[key], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", OTHER_PAIRS)
def test_other_library_pairs_take_the_generic_path(name):
    model, guide, x, y = library_pair(OTHER_PAIRS[name])
    assert not direct_pair(model, guide, x, y)


def test_handlers_and_user_pairs_take_the_generic_path():
    model, guide, x, y = library_pair([])
    with pyro.poutine.trace():
        assert not direct_pair(model, guide, x, y)
    assert not direct_pair(pyro.poutine.scale(model, scale=2.0), guide, x, y)
    ppca_model, p, xp = problem(n=8)
    assert not direct_pair(ppca_model, exact_guide(p), xp)  # a user's guide


class SampledScalePrior(nn.Module):
    """A prior that draws its own scale inside the model: an extra site the direct path cannot see."""

    latent_dim = 3

    def forward(self) -> dist.Distribution:
        tau = pyro.sample("tau", dist.LogNormal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1))
        return dist.Normal(torch.zeros(3, dtype=torch.float64), tau).to_event(1)


def test_a_part_with_its_own_pyro_sites_is_refused_by_the_check():
    model, guide, x, y = library_pair([])
    odd = VAEModel(SampledScalePrior(), model.decoder, model.likelihood)
    assert not direct_pair(odd, guide, x, y)
    assert direct_pair(VAEModel(StandardNormal(3).double(), model.decoder, model.likelihood), guide, x, y)
