"""DIP-VAE (Kumar, Sattigeri & Balakrishnan, ICLR 2018): the ELBO with a penalty that pulls the covariance of the
batch's codes towards the identity, the prior's; a baseline of the noise-variance study (its tables 2 and 3)."""

from __future__ import annotations

from typing import Annotated

import torch
from pyro.distributions.kl import kl_divergence

from ppvae import registry
from ppvae.errors import EstimatorError
from ppvae.infer import fast
from ppvae.infer.estimators.base import Estimator, Objective, check_one_local_latent, one_draw
from ppvae.registry import Param


def code_covariance(q: torch.distributions.Distribution, kind: str) -> torch.Tensor:
    """Cov[mu(x)] over the batch (DIP-VAE-I), plus the mean posterior variance on the diagonal (DIP-VAE-II: the
    covariance of the batch's aggregate posterior)."""
    mu = q.mean.reshape(q.mean.shape[0], -1)
    cov = torch.cov(mu.T, correction=0)
    return cov if kind == "i" else cov + torch.diag(q.variance.reshape(mu.shape).mean(0))


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2."""
    diag = torch.diagonal(cov)
    return lambda_od * (cov.pow(2).sum() - diag.pow(2).sum()) + lambda_d * (diag - 1).pow(2).sum()


@registry.register("estimator", "dip_vae")
class DIPVAE(Estimator):
    """DIP-VAE: the ELBO (closed-form KL) minus lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2, C the
    batch's code covariance (type i: of the posterior means; ii: of q(z) on the batch). The loss is no bound."""

    name = "dip_vae"

    def __init__(self, *,
                 kind: Annotated[str, Param(doc="i: the posterior means' covariance; ii: q(z)'s on the batch",
                                            choices=("i", "ii"))] = "i",
                 lambda_od: Annotated[float, Param(">= 0", "weight of the off-diagonal covariances")] = 10.0,
                 lambda_d: Annotated[float, Param(">= 0", "weight of the variances' distance from 1 (Kumar et al.: "
                                                          "10 lambda_od for type i, lambda_od for ii)")] = 100.0,
                 **kl_weight):
        super().__init__(**kl_weight)
        self.kind, self.lambda_od, self.lambda_d = kind, lambda_od, lambda_d

    def check(self, model, guide, x, y=None) -> None:
        check_one_local_latent(guide, x, y, self.name)
        d = one_draw(model, guide, x, y)
        try:
            d.q.mean, d.q.variance, kl_divergence(d.q, d.prior.expand(d.q.batch_shape))
        except NotImplementedError as e:
            raise EstimatorError(f"dip_vae needs q(z|x) with a closed-form mean, variance and KL to the prior "
                                 f"({type(d.q).__name__} against {type(d.prior).__name__}): use guide.family = "
                                 "'normal'.") from e

    def __call__(self, model, guide, x, y=None) -> Objective:
        d = one_draw(model, guide, x, y)
        penalty = dip_penalty(code_covariance(d.q, self.kind), self.lambda_od, self.lambda_d)
        loss = -fast.meanfield_elbo(d, self.beta) + x.shape[0] * penalty  # summed over the batch, like the ELBO
        return Objective(loss, loss.detach())
