"""The label-marginal likelihood of a conditional pair, against a conditional linear-Gaussian model whose
log p(x | y) and log p(x) are known exactly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppvae.models import GaussianFixed, StandardNormal, VAEModel, ppca
from torch import nn

from ppvae.analyses.base import RunContext
from ppvae.analyses.label_marginal import LabelMarginal
from ppvae.config import from_dict
from ppvae.data import Dataset
from ppvae.errors import ConfigError

D, d, C, N = 5, 2, 3, 40


class LabelPosterior:
    """q(z | x, y) = the exact posterior of the label's pPCA, its covariance times ``inflate``."""

    def __init__(self, params, offsets, inflate: float = 1.0):
        self.params, self.offsets, self.inflate = params, offsets, inflate

    def __call__(self, x, y=None):
        p = ppca.PPCAParams(self.params.W, self.params.b + self.offsets[y], self.params.sigma)
        post = ppca.exact_posterior(x, p)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post.loc, covariance_matrix=post.covariance_matrix * self.inflate))


@pytest.fixture(scope="module")
def oracle():
    """A CVAE whose decoder adds a label offset to pPCA's mean, the labelled data it generated, and the exact
    log p(x | y) [N, C] of the test points."""
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(D, d, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    offsets = 2 * torch.randn(C, D, generator=g, dtype=torch.float64)
    params = ppca.PPCAParams(W, b, torch.tensor(0.5, dtype=torch.float64))
    decoder = nn.Linear(d + C, D).double()
    with torch.no_grad():
        decoder.weight.copy_(torch.cat([W, offsets.T], 1))
        decoder.bias.copy_(b)
    model = VAEModel(StandardNormal(d), decoder, GaussianFixed(sigma=0.5), num_classes=C).double()
    train_y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    test_y = torch.randint(0, C, (N,), generator=g)
    test_x = ppca.sample(params, N, generator=g) + offsets[test_y]
    data = Dataset("oracle", torch.zeros(len(train_y), D, dtype=torch.float64), test_x, (D,), train_y, test_y,
                   num_classes=C)
    exact = torch.stack([ppca.exact_log_likelihood(test_x - offsets[c], params) for c in range(C)], 1)
    return model, params, offsets, data, exact


def context(oracle, guide, k: int) -> RunContext:
    model, _, _, data, _ = oracle
    return RunContext(run_dir=None, name="oracle", data=data, model=model, guide=guide, params={}, seed=0,
                      data_seed=0, num_test=N, metrics={"eval_k": k})


def test_exact_guide_gives_the_exact_marginal_and_the_bayes_classifier(oracle):
    model, params, offsets, data, exact = oracle
    log_py = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    joint = exact + log_py
    m = LabelMarginal(k=3).run(context(oracle, LabelPosterior(params, offsets), k=0)).metrics
    assert m["test_nll_marginal"] == pytest.approx(-torch.logsumexp(joint, 1).mean().item(), abs=1e-9)
    assert m["test_nll_given_label"] == pytest.approx(-exact.gather(1, data.test_y[:, None]).mean().item(), abs=1e-9)
    assert m["label_accuracy"] == pytest.approx((joint.argmax(1) == data.test_y).double().mean().item())
    assert m["marginal_k_per_label"] == 3
    # p(x) <= p(x | y) p(y) / ... : summing the label out can only add mass against the true label's term
    assert m["test_nll_marginal"] <= -(exact.gather(1, data.test_y[:, None]).squeeze(1) +
                                       log_py[data.test_y]).mean().item()
    uniform = LabelMarginal(k=3, label_prior="uniform").run(context(oracle, LabelPosterior(params, offsets), 0))
    assert uniform.metrics["test_nll_marginal"] == pytest.approx(
        -(torch.logsumexp(exact, 1) - math.log(C)).mean().item(), abs=1e-9)


def test_an_inexact_guide_gives_a_bound_that_tightens_with_k(oracle):
    model, params, offsets, data, exact = oracle
    truth = -torch.logsumexp(exact + torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)), 1).mean().item()
    wide = LabelPosterior(params, offsets, inflate=3.0)
    one = LabelMarginal(k=1).run(context(oracle, wide, 0)).metrics["test_nll_marginal"]
    many = LabelMarginal(k=0).run(context(oracle, wide, 3 * 2000)).metrics  # eval_k / classes = 2000 per label
    assert many["marginal_k_per_label"] == 2000
    assert one > truth + 0.3  # one draw per label: a loose bound ...
    assert truth - 0.01 < many["test_nll_marginal"] < truth + 0.05  # ... which IWAE per label closes


def test_label_marginal_needs_a_conditional_pair():
    with pytest.raises(ConfigError, match="eval.label_marginal sums a conditional pair's label out"):
        from_dict({"data": {"binarize": "dynamic"}, "eval": {"label_marginal": True}})
    cfg = from_dict({"data": {"binarize": "dynamic"}, "model": {"conditional": True}, "eval": {"label_marginal": True}})
    assert "label_marginal" in cfg.eval.analyses
