"""The aggregate-posterior mixture as the prior, against a linear-Gaussian model: with p(z) a Gaussian mixture,
p(x) = sum_c pi_c N(x; W m_c + b, W S_c W^T + sigma^2 I) is known exactly."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppvae.models import GaussianFixed, StandardNormal, VAEModel, ppca
from torch import nn

import ppvae.analyses.base as base
from ppvae.analyses.base import RunContext
from ppvae.analyses.mixture_prior import MixturePrior, WithPrior
from ppvae.data import Dataset
from ppvae.evaluation.loglik import log_likelihood
from ppvae.evaluation.sampling import fit_aggregate
from ppvae.sites import posterior_codes, posterior_means

D, d, SIGMA = 5, 2, 0.5


class ExactPosterior:
    """q(z | x) = pPCA's exact posterior under the model's own prior N(0, I)."""

    def __init__(self, params):
        self.params = params

    def __call__(self, x, y=None):
        post = ppca.exact_posterior(x, self.params)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post.loc, covariance_matrix=post.covariance_matrix))


def linear_pair(W, b):
    decoder = nn.Linear(d, D).double()
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
    params = ppca.PPCAParams(W, b, torch.tensor(SIGMA, dtype=torch.float64))
    return VAEModel(StandardNormal(d), decoder, GaussianFixed(sigma=SIGMA)).double(), ExactPosterior(params)


def mixture_log_likelihood(x, W, b, weights, means, covs):
    """Exact log p(x) of the linear-Gaussian decoder under the prior sum_c weights_c N(means_c, covs_c)."""
    marginals = dist.MultivariateNormal(means @ W.T + b, W @ covs @ W.T + SIGMA**2 * torch.eye(D, dtype=W.dtype))
    return torch.logsumexp(marginals.log_prob(x[:, None, :]) + weights.log(), 1)


def generate(W, b, n, weights, means, covs, g):
    c = torch.multinomial(weights, n, replacement=True, generator=g)
    z = means[c] + (torch.linalg.cholesky(covs)[c] @ torch.randn(n, d, 1, generator=g, dtype=W.dtype)).squeeze(-1)
    return z @ W.T + b + SIGMA * torch.randn(n, D, generator=g, dtype=W.dtype)


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(D, d, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    means = torch.tensor([[-3.0, 2.0], [2.5, -1.5]], dtype=torch.float64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), torch.tensor([[0.2, -0.05], [-0.05, 0.4]])]).double()
    return W, b, weights, means, covs, g


def test_a_swapped_mixture_prior_is_scored_exactly(setting):
    W, b, weights, means, covs, g = setting
    model, guide = linear_pair(W, b)
    x = generate(W, b, 30, weights, means, covs, g)
    prior = dist.MixtureSameFamily(dist.Categorical(weights), dist.MultivariateNormal(means, covs))
    exact = mixture_log_likelihood(x, W, b, weights, means, covs)
    iwae = log_likelihood(WithPrior(model, prior), guide, x, k=20_000, seed=1)["ll"]
    elbo = log_likelihood(WithPrior(model, prior), guide, x, k=1, seed=1)["ll"]
    assert (iwae - exact).abs().max() < 0.02
    assert (elbo - exact).mean() < -0.1  # the old posterior is not the new one: the k = 1 bound is loose
    own = log_likelihood(model, guide, x, k=3, seed=1)["ll"]  # the model itself is untouched
    assert torch.allclose(own, ppca.exact_log_likelihood(x, ppca.PPCAParams(W, b, torch.tensor(SIGMA).double())))


def context(model, guide, train_x, test_x) -> RunContext:
    data = Dataset("oracle", train_x, test_x, (D,), images=False)
    return RunContext(run_dir=None, name="oracle", data=data, model=model, guide=guide, params={}, seed=0,
                      data_seed=0, num_test=len(test_x), metrics={})


def test_the_analysis_fits_the_training_codes_and_beats_the_prior_they_left(setting):
    """Data from a mixture far from N(0, I): a one-component fit to the training posterior means gives the
    closed-form log p(x) of that Gaussian prior, above the model's own prior."""
    W, b, weights, means, covs, g = setting
    model, guide = linear_pair(W, b)
    train_x, test_x = (generate(W, b, n, weights, means, covs, g) for n in (4000, 40))
    out = MixturePrior(k=5000, components=1).run(context(model, guide, train_x, test_x)).metrics
    codes = ppca.exact_posterior(train_x, ppca.PPCAParams(W, b, torch.tensor(SIGMA).double())).mean
    fitted = mixture_log_likelihood(test_x, W, b, torch.ones(1, dtype=torch.float64), codes.mean(0, keepdim=True),
                                    torch.cov(codes.T, correction=0)[None])
    assert abs(out["test_ll_mixture_prior_means"] - fitted.mean().item()) < 0.02
    exact_own = ppca.exact_log_likelihood(test_x, ppca.PPCAParams(W, b, torch.tensor(SIGMA).double())).mean()
    assert abs(out["test_ll_own_prior"] - exact_own.item()) < 1e-6
    for fit in ("means", "draws"):
        assert out[f"mixture_prior_gain_{fit}"] > 5 * out[f"mixture_prior_gain_{fit}_se"] > 0
    two = MixturePrior(k=5000, components=2).run(context(model, guide, train_x, test_x)).metrics
    truth = mixture_log_likelihood(test_x, W, b, weights, means, covs).mean().item()  # the generating prior's
    assert abs(two["test_ll_mixture_prior_draws"] - truth) < 0.15 < truth - out["test_ll_mixture_prior_draws"]


def test_a_means_mixture_starves_an_unused_unit(setting):
    """A unit the decoder ignores has posterior means 0 and draws of sd 1: the mixture of the means is a spike
    there, which scores the guide's draws far worse than the mixture of draws does."""
    W, b, weights, means, covs, g = setting
    W = torch.cat([W[:, :1], torch.zeros(D, 1, dtype=W.dtype)], 1)
    model, guide = linear_pair(W, b)
    train_x, test_x = (generate(W, b, n, weights, means, covs, g) for n in (2000, 40))
    out = MixturePrior(k=50, components=2).run(context(model, guide, train_x, test_x)).metrics
    assert out["test_ll_mixture_prior_draws"] > out["test_ll_mixture_prior_means"] + 100
    assert out["mixture_prior_gain_draws"] > 0


def test_the_training_codes_are_encoded_once_and_each_mixture_fit_once(setting, monkeypatch):
    """sample_quality and mixture_prior share the run's means mixture; the means and the draws come from one
    pass of the guide, on a stream of their own (the caller's draws continue unchanged)."""
    W, b, weights, means, covs, g = setting
    model, guide = linear_pair(W, b)
    train_x, test_x = (generate(W, b, n, weights, means, covs, g) for n in (300, 10))
    ctx = context(model, guide, train_x, test_x)
    passes, fits = [], []
    monkeypatch.setattr(base, "posterior_codes", lambda *a: passes.append(1) or posterior_codes(*a))
    monkeypatch.setattr(base, "fit_aggregate", lambda *a: fits.append(a[1:]) or fit_aggregate(*a))
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    mixture = ctx.aggregate_mixture(2)
    assert torch.equal(torch.rand(1), before)
    MixturePrior(k=5, components=2).run(ctx)
    assert ctx.aggregate_mixture(2) is mixture and ctx.aggregate_mixture(2, "draws") is not mixture
    assert passes == [1] and fits == [(2, 0), (2, 0)]
    code_means, code_draws = ctx.training_codes()
    assert torch.allclose(code_means, posterior_means(guide, train_x))
    spread = (code_draws - code_means).std(0)  # one draw of q(z|x) per point, not the means again
    assert (spread > 0.1).all()
