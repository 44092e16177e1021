"""The fast path (ppvae.infer.fast) computes what the generic Pyro path computes.

For the pairs the library builds from every registered part, log-weights, every estimator's
loss and gradients, and the evaluator's numbers must agree with the generic path to float64
rounding; any other pair, or a library pair under a Pyro handler, must take the generic path;
and the one-time check refuses a pair whose losses or log-weights differ from Pyro's.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import exact_guide, problem
from ppvae.models import StandardNormal, VAEModel
from test_parts import PARTS, overrides
from torch import nn

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.evaluation.loglik import log_likelihood
from ppvae.infer.estimators import make_estimator
from ppvae.infer.fast import direct_pair, generic_path
from ppvae.infer.importance import log_weights

# one bundled pair per registered part (test_parts.overrides fits the other parts to it), and the conditional one
LIBRARY_PAIRS = {f"{kind}-{name}": overrides(kind, name) for kind, name in PARTS} | {
    "conditional": ["model.conditional=true"]}
OTHER_PAIRS = {
    "two-layer": ["model.top_latent_dim=2"],
    "denoising": ["guide.noise=0.1"],
    "bayesian-decoder": ["model.weights=bayesian"],
}
ESTIMATORS = [
    dict(name="trace", num_particles=2),
    dict(name="meanfield"),
    dict(name="meanfield", num_particles=3, beta=0.5),
    dict(name="iwae", k=3),
    dict(name="iwae", k=3, gradient="stl"),
    dict(name="iwae", k=3, gradient="dreg", beta=2.0),
]


def library_pair(extra: list[str]):
    """A pair from build_pair on the embedded digits, in float64, and a batch (x, y)."""
    cfg = config.load("quickstart", ["data.max_train=64", "model.latent_dim=3", *extra])
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


@pytest.mark.parametrize("name", ["likelihood-bernoulli", "likelihood-gaussian_learned", "prior-mixture", "prior-beta",
                                  "family-lowrank", "family-flow"])
@pytest.mark.parametrize("cfg", ESTIMATORS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
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


def test_the_check_compares_the_fast_losses_with_pyros(monkeypatch):
    """If the fast ELBO formulas drifted from Pyro's Trace_ELBO / TraceMeanField_ELBO, the one-time check
    would refuse the fast path (here: a fast meanfield KL off by one nat per point)."""
    from ppvae.infer import fast

    model, guide, x, y = library_pair([])
    assert direct_pair(model, guide, x, y)
    fresh_model, fresh_guide, _, _ = library_pair([])
    real = fast.meanfield_elbo
    monkeypatch.setattr(fast, "meanfield_elbo", lambda d, beta=1.0: real(d, beta) + d.obs.shape[1])
    assert not direct_pair(fresh_model, fresh_guide, x, y)


def test_the_check_leaves_batch_norm_statistics_alone():
    """The one-time check runs the pair a few times; in training mode that would move a CNN's running statistics."""
    model, guide, x, y = library_pair(overrides("network", "cnn"))
    before = {k: v.clone() for k, v in (model.state_dict() | guide.state_dict()).items() if "running" in k}
    assert before and direct_pair(model, guide, x, y)
    after = model.state_dict() | guide.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.training and guide.training
