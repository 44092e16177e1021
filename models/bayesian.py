"""A VAE whose decoder weights are latent variables: full variational Bayes (Kingma & Welling, appendix F).

The decoder is a :class:`pyro.nn.PyroModule` whose weights and biases are ``PyroSample``
attributes with a Gaussian or a scale-mixture prior. The model draws them once per call,
*outside* the ``data`` plate, so they are global latent sites; the guide
(:mod:`ppvae.guides.bayesian`) holds a mean-field Normal posterior over them.

Scaling under minibatching
    The full-data objective is ``sum_n ELBO_n(W) + log p(W) - log q(W)``. A batch of B of the
    N training points carries its local terms at scale 1 and the weight sites at scale B/N
    (model and guide alike), so the objectives of the batches of an epoch add up to the
    full-data objective in expectation, and the trainer's per-example loss (``loss / B``) is
    ``mean_batch ELBO_n - KL(q(W) || p(W)) / N``: the same units, and the same learning rates,
    as the point-estimate VAE. (Scaling the local terms by N/B instead gives the same optimum
    and gradients N/B times larger.)

One weight draw per call
    The guide draws each weight once per call and shares it across vectorized particles
    (the IWAE estimator's k samples, Trace_ELBO's vectorized particles). An importance-weighted
    bound over the local z with the weights' log p(W) - log q(W) outside the logsumexp is a
    lower bound on log p(X) only when the k samples of a data point see the same weights.

Local reparameterization (Kingma, Salimans & Welling 2015)
    With a Normal posterior, ``h W^T + b`` given h is Normal with mean ``h mu_W^T + mu_b`` and
    variance ``h^2 sigma_W^2 + sigma_b^2``; sampling that directly, per data point and layer,
    gives the same expected log-likelihood as one weight draw per data point, with much less
    gradient noise. It applies to the ELBO estimators (trace, meanfield), where the weights'
    KL is a separate term. The model applies it when the weights it is handed are exactly
    the guide's latest draw; anything else (conditioned or replayed weights) is used as given.

The model run on its own
    When no guide draw is replayed into it (figures: reconstructions, samples), the model
    decodes with the posterior-mean weights, so its pictures show the trained decoder rather
    than weights drawn from the prior.
"""

from __future__ import annotations

from typing import Annotated

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from ppvae import registry
from ppvae.nn.bayesian import BayesianMLP, WeightLink, WeightPrior
from ppvae.registry import Param, Spec
from ppvae.sites import Preset


@registry.register("weights", "bayesian", bayesian=True)
class BayesianWeights:
    """A mean-field Normal posterior over every decoder weight (full variational Bayes, K&W appendix F)."""

    def __init__(self, *,
                 prior: Annotated[str, Param(doc="N(0, s^2) per weight, or pi N(0, s^2) + (1 - pi) N(0, s_narrow^2)",
                                             choices=("normal", "scale_mixture"))] = "normal",
                 prior_scale: Annotated[float, Param("> 0", "prior sd s (the wide component of the mixture)")] = 1.0,
                 prior_narrow: Annotated[float, Param("> 0", "scale_mixture: sd of the narrow component")] = 0.0025,
                 prior_mix: Annotated[float, Param("in (0, 1)", "scale_mixture: weight pi of the wide component")] = 0.5,
                 init: Annotated[str, Param(doc="a point-estimate run folder whose decoder (posterior means) and "
                                                "encoder start the run (MAP initialization)")] = "",
                 init_scale: Annotated[float, Param("> 0", "initial posterior sd of every weight")] = 0.01,
                 local_reparam: Annotated[bool, Param(doc="local reparameterization trick (estimators whose bound "
                                                          "allows it: trace, meanfield)")] = True,
                 kl_per_batch: Annotated[bool, Param(doc="count the weights' KL in full on every minibatch, N / "
                                                         "batch_size times too often: wrong, the replications' "
                                                         "suspected bug, for ablations")] = False):
        self.prior = WeightPrior(prior, prior_scale, prior_narrow, prior_mix)
        self.init, self.init_scale = init, init_scale
        self.local_reparam, self.kl_per_batch = local_reparam, kl_per_batch

    def decoder(self, network: Spec, in_dim: int, out_dim: int, image_shape: tuple[int, ...]) -> BayesianMLP:
        """The MLP decoder ``network`` describes with these weights, linked to the weight posterior the guide
        will hold (MLPs only: :mod:`ppvae.rules`)."""
        return BayesianMLP(in_dim, network.hidden, out_dim, network.activation, self.prior, WeightLink(),
                           self.local_reparam)


class BayesianVAEModel(PyroModule):
    """p(W) p(z) p(x | z, W): the VAE model with a Bayesian decoder (see the module docstring).

    ``dataset_size`` is N, the number of training points, which scales the weight sites by B/N (times
    ``kl_scale``, 1 but in the ``kl_per_batch`` ablation).
    """

    def __init__(self, prior: nn.Module, decoder: BayesianMLP, likelihood: nn.Module, dataset_size: int,
                 kl_scale: float = 1.0):
        super().__init__()
        self.prior, self.decoder, self.likelihood = prior, decoder, likelihood
        self.dataset_size, self.kl_scale, self.link = dataset_size, kl_scale, decoder.link

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def metrics(self) -> dict[str, float]:
        """The likelihood's sigma when it has one; the weight posterior's mean sd and KL per training example."""
        sigma = getattr(self.likelihood, "sigma", None)
        sigma = None if sigma is None else torch.as_tensor(sigma).detach()
        out = {} if sigma is None or sigma.numel() != 1 else {"likelihood_sigma": float(sigma)}
        return out | weight_posterior_summary(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with poutine.scale(scale=self.kl_scale * x.shape[0] / self.dataset_size), Preset(self.link.means()):
            self.decoder.draw()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            code = self.prior.decoder_input(z) if getattr(self.prior, "decoder_input", None) is not None else z
            pyro.sample("x", self.likelihood(self.decoder(code)), obs=x)


@torch.no_grad()
def weight_kl(model: BayesianVAEModel, draws: int = 16) -> torch.Tensor:
    """KL(q(W) || p(W)) over all decoder weights: closed form for the Normal prior, else Monte Carlo."""
    posterior = model.link.posterior
    total = torch.zeros(())
    for name, shape in model.decoder.site_shapes().items():
        q = dist.Normal(posterior.loc(name), posterior.scale(name)).to_event(len(shape))
        p = model.decoder[0].prior(tuple(shape))
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            w = q.sample((draws,))
            kl = (q.log_prob(w) - p.log_prob(w)).mean(0)
        total = total + kl.cpu()
    return total


def weight_posterior_summary(model: BayesianVAEModel) -> dict[str, float]:
    """Mean posterior sd of the decoder weights and KL(q(W) || p(W)) per training example."""
    posterior = model.link.posterior
    if posterior is None:
        return {}
    with torch.no_grad():
        scales = torch.cat([posterior.scale(name).flatten() for name in posterior.names])
    return {"weight_sd_mean": float(scales.mean()), "weight_kl_per_example": float(weight_kl(model)) / model.dataset_size}



__all__ = ["BayesianWeights", "BayesianVAEModel", "weight_kl", "weight_posterior_summary"]
