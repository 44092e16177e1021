"""The VampPrior: p(z) is the mixture of the guide's own q(z | u_k) at the learned pseudo-inputs."""

import math

import pytest
import torch

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.errors import ConfigError
from ppvae.infer.estimators import make_estimator
from ppvae.infer.trainer import Trainer

SMALL = ["model.latent_dim=3", "model.decoder.hidden=[8]", "guide.encoder.hidden=[8]",
         "model.prior={name=\"vamp\", components=5}"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic", max_train=64)


def test_log_prob_is_the_mixture_of_the_guide_posteriors_at_the_pseudo_inputs(digits):
    torch.manual_seed(0)
    cfg = config.load("quickstart", SMALL)
    model, guide = build_pair(cfg, digits)
    prior = model.prior
    assert prior.pseudo_inputs.shape == (5, digits.x_dim)
    with torch.no_grad():  # spread the pseudo-inputs over [0, 1] (and past it: hardtanh clips)
        prior.pseudo_inputs.uniform_(-0.2, 1.2)
    z = torch.randn(7, 3, dtype=torch.float32)
    direct = []
    for u in prior.pseudo_inputs:  # one pseudo-input at a time through the guide, clipped to pixels
        q = guide.posterior(u.clamp(0, 1)[None])
        direct.append(q.log_prob(z))  # [7]
    expected = torch.logsumexp(torch.stack(direct), 0) - math.log(5)
    assert torch.allclose(prior().log_prob(z), expected, atol=1e-5)


def test_pseudo_inputs_belong_to_the_model_and_train_with_the_encoder(digits):
    cfg = config.load("quickstart", SMALL)
    model, guide = build_pair(cfg, digits)
    model_names = {n for n, _ in model.named_parameters()}
    assert "prior.pseudo_inputs" in model_names and not any(n.startswith("prior.") and n != "prior.pseudo_inputs"
                                                             for n in model_names)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(digits.batches(32, shuffle=False))
    trainer.setup(x)
    before = model.prior.pseudo_inputs.detach().clone()
    trainer.train_step(x)
    assert not torch.equal(before, model.prior.pseudo_inputs)


@pytest.mark.parametrize("extra", [["model.conditional=true"], ["model.top_latent_dim=2"]])
def test_the_vamp_prior_is_refused_where_the_guide_cannot_give_its_components(extra):
    with pytest.raises(ConfigError, match="vamp"):
        config.load("quickstart", [*SMALL, *extra])
