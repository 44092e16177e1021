"""DIP-VAE (Kumar, Sattigeri & Balakrishnan, ICLR 2018): the ELBO with a penalty that pulls the covariance of the
batch's codes towards the prior's (the identity for N(0, I)); a baseline of the noise-variance study (its tables 2
and 3)."""

from __future__ import annotations

import warnings
from typing import Annotated

import torch
from pyro.distributions.kl import kl_divergence

from ppvae import registry
from ppvae.infer import fast
from ppvae.infer.estimators.base import Estimator, Objective, check_one_local_latent, one_draw
from ppvae.infer.estimators.meanfield import family_name
from ppvae.registry import Param


def code_covariance(q: torch.distributions.Distribution, z: torch.Tensor, kind: str) -> torch.Tensor:
    """Cov[mu(x)] over the batch (DIP-VAE-I), plus the mean posterior variance on the diagonal (DIP-VAE-II: the
    covariance of the batch's aggregate posterior). A family without a closed-form mean and variance (a flow)
    gets the covariance of its draws ``z`` [N, d], a Monte Carlo estimate of type ii's."""
    try:
        mu, var = q.mean, q.variance
    except NotImplementedError:
        return torch.cov(z.reshape(z.shape[0], -1).T, correction=0)
    mu = mu.reshape(mu.shape[0], -1)
    cov = torch.cov(mu.T, correction=0)
    return cov if kind == "i" else cov + torch.diag(var.reshape(mu.shape).mean(0))


def dip_penalty(cov: torch.Tensor, prior_var: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od sum_{i != j} R_ij^2 + lambda_d sum_i (R_ii - 1)^2 with R = C / sqrt(v_i v_j), the codes' covariance in
    units of the prior's sds (R = C for N(0, I), Kumar et al.'s case), so its size does not depend on the prior's."""
    sd = prior_var.sqrt()
    r = cov / (sd[:, None] * sd[None, :])
    diag = torch.diagonal(r)
    return lambda_od * (r.pow(2).sum() - diag.pow(2).sum()) + lambda_d * (diag - 1).pow(2).sum()


@registry.register("estimator", "dip_vae")
class DIPVAE(Estimator):
    """DIP-VAE: the ELBO (closed-form KL where one exists) minus lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i
    (C_ii - 1)^2, C the batch's code covariance (type i: of the posterior means; ii: of q(z) on the batch) in units
    of the prior's sds (as is for N(0, I)). The loss is no bound."""

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
        """Refuse latents besides z; where q has no closed-form mean and variance, or no closed-form KL to the
        prior, say so (warning and ``estimator_notes``) and use the draws' covariance or a Monte Carlo KL."""
        check_one_local_latent(guide, x, y, self.name)
        d = one_draw(model, guide, x, y)
        try:
            d.q.mean, d.q.variance
            self.notes["dip_covariance"] = "closed form" if self.kind == "ii" else "closed form (posterior means)"
        except NotImplementedError:
            self.notes["dip_covariance"] = "draws"
            warnings.warn(f"dip_vae: q(z|x) ({family_name(d.q)}) has no closed-form mean and variance; "
                          "the penalty uses the covariance of the batch's draws (q(z)'s, type ii) instead.",
                          stacklevel=2)
        try:
            kl_divergence(d.q, d.prior.expand(d.q.batch_shape))
            self.notes["kl"] = "closed form"
        except NotImplementedError:
            self.notes["kl"] = "Monte Carlo"
            warnings.warn("dip_vae: no closed-form KL between q(z|x) and the prior; the ELBO term uses the Monte "
                          "Carlo KL of the draw.", stacklevel=2)

    def __call__(self, model, guide, x, y=None) -> Objective:
        d = one_draw(model, guide, x, y)
        cov = code_covariance(d.q, d.z[0], self.kind)
        target = d.prior.variance.detach().reshape(-1, cov.shape[0])[0]  # a fixed target: the penalty moves q, not p
        penalty = dip_penalty(cov, target, self.lambda_od, self.lambda_d)
        loss = -fast.meanfield_elbo(d, self.beta) + x.shape[0] * penalty  # summed over the batch, like the ELBO
        return Objective(loss, loss.detach())
