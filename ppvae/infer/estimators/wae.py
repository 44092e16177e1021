"""The Wasserstein autoencoder with the MMD penalty (Tolstikhin et al., ICLR 2018): reconstruction plus a kernel
distance between the batch's codes and draws of the prior; a baseline of the noise-variance study (its table 2)."""

from __future__ import annotations

from typing import Annotated

import torch

from ppvae import registry
from ppvae.infer.estimators.base import Estimator, Objective, check_one_local_latent, one_draw
from ppvae.registry import Param

SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # of the kernel's C = 2 d var(prior), as in the authors' code


def imq_mmd(a: torch.Tensor, b: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """The unbiased MMD^2 between samples ``a`` and ``b`` [n, d] under the inverse multiquadratic kernels
    k(u, v) = C / (C + |u - v|^2), summed over C in c * SCALES."""
    n = a.shape[0]
    both = torch.cat([a, b])
    sq = both.pow(2).sum(1)
    dist2 = (sq[:, None] + sq[None, :] - 2 * both @ both.T).clamp_min(0)
    k = sum(c * s / (c * s + dist2) for s in SCALES)
    off = 1 - torch.eye(n, dtype=a.dtype, device=a.device)
    within = ((k[:n, :n] + k[n:, n:]) * off).sum() / (n * (n - 1))
    return within - 2 * k[:n, n:].mean()


@registry.register("estimator", "wae_mmd")
class WAEMMD(Estimator):
    """WAE-MMD: -E_q log p(x|z) + beta * weight * N * MMD^2(codes, prior draws) on each batch, with inverse
    multiquadratic kernels; with guide.family = 'delta' and a fixed-sigma Gaussian it is Tolstikhin et al.'s
    squared-error WAE. The loss is no bound on log p(x)."""

    name = "wae_mmd"

    def __init__(self, *, weight: Annotated[float, Param(">= 0", "the MMD's weight lambda (Tolstikhin et al.: 10 "
                                                                  "on MNIST)")] = 10.0, **kl_weight):
        super().__init__(**kl_weight)
        self.weight = weight

    def check(self, model, guide, x, y=None) -> None:
        check_one_local_latent(guide, x, y, self.name)

    def __call__(self, model, guide, x, y=None) -> Objective:
        d = one_draw(model, guide, x, y)
        z = d.z[0].reshape(x.shape[0], -1)
        prior = d.prior.expand(d.q.batch_shape)
        drawn = prior.sample().reshape(z.shape)
        mmd = imq_mmd(z, drawn, 2 * z.shape[1] * prior.variance.mean().detach())
        loss = -d.obs.sum() + self.beta * self.weight * x.shape[0] * mmd
        return Objective(loss, loss.detach())
