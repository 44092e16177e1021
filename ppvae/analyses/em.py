"""Expectation-maximization baselines: Gaussian mixtures and probabilistic PCA.

The "theory vs practice" study compares a VAE with the latent-variable models that EM fits
exactly: a GMM (discrete latent) and pPCA (linear-Gaussian latent, whose EM fixed point is
the closed-form maximum-likelihood solution in ``ppvae.models.ppca.fit_ml``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import MultivariateNormal

from ppvae.models.ppca import PPCAParams, exact_log_likelihood, fit_ml


class GMM(NamedTuple):
    weights: torch.Tensor  # [K]
    means: torch.Tensor  # [K, D]
    covariances: torch.Tensor  # [K, D, D], or the variances [K, D] of a diagonal mixture
    history: list[float]  # mean log-likelihood per iteration


def _component_log_prob(gmm: GMM, x: torch.Tensor) -> torch.Tensor:
    """log N(x_n | mean_k, cov_k) as [N, K]; a diagonal mixture uses matrix products, as scikit-learn does,
    so 784-D images never need D x D matrices or [N, K, D] tensors."""
    if gmm.covariances.dim() == 2:
        prec = 1.0 / gmm.covariances
        const = (gmm.means**2 * prec + torch.log(2 * math.pi * gmm.covariances)).sum(1)
        return -0.5 * (x**2 @ prec.T - 2 * x @ (gmm.means * prec).T + const)
    return MultivariateNormal(gmm.means, covariance_matrix=gmm.covariances).log_prob(x[:, None, :])


def gmm_log_likelihood(gmm: GMM, x: torch.Tensor) -> torch.Tensor:
    """log p(x) per data point under the mixture."""
    return torch.logsumexp(gmm.weights.log() + _component_log_prob(gmm, x), dim=-1)


def fit_gmm(x: torch.Tensor, k: int, *, iterations: int = 300, tol: float = 1e-7, reg: float = 1e-6,
            seed: int = 0, diagonal: bool = False) -> GMM:
    """GMM by EM, initialized at k data points spread k-means++ style.

    ``reg`` is added to every covariance diagonal, as scikit-learn's ``reg_covar``.
    ``diagonal`` keeps only the covariance diagonals: the affordable choice for 784-D images.
    """
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    centers = [int(torch.randint(n, (1,), generator=g))]
    for _ in range(1, k):  # k-means++ seeding: far points are more likely
        dist2 = torch.cdist(x, x[centers]).min(1).values ** 2
        centers.append(int(torch.multinomial(dist2 / dist2.sum(), 1, generator=g)))
    eye = torch.eye(d, dtype=x.dtype)
    if diagonal:
        cov = x.var(0, correction=0).expand(k, d) + reg
    else:
        cov = torch.cov(x.T, correction=0).expand(k, d, d) + reg * eye
    gmm = GMM(torch.full((k,), 1.0 / k, dtype=x.dtype), x[centers].clone(), cov, [])
    for _ in range(iterations):
        joint = gmm.weights.log() + _component_log_prob(gmm, x)  # [N, K]
        ll = torch.logsumexp(joint, 1, keepdim=True)
        gmm.history.append(ll.mean().item())
        resp = (joint - ll).exp()
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
        means = resp.T @ x / nk[:, None]
        if diagonal:  # E_r[x^2] - mean^2, as scikit-learn: no [K, N, D] tensor
            covs = resp.T @ x**2 / nk[:, None] - means**2 + reg
        else:
            centered = x[None] - means[:, None]  # [K, N, D]
            covs = torch.einsum("kn,kni,knj->kij", resp.T, centered, centered) / nk[:, None, None] + reg * eye
        gmm = GMM(nk / n, means, covs, gmm.history)
        if len(gmm.history) > 1 and abs(gmm.history[-1] - gmm.history[-2]) < tol:
            break
    return gmm


def fit_ppca_em(x: torch.Tensor, latent_dim: int, *, iterations: int = 2000, tol: float = 1e-10,
                seed: int = 0) -> tuple[PPCAParams, list[float]]:
    """pPCA by EM (Tipping & Bishop 1999, eq. 29-30), from a random W; returns params and sigma^2 history."""
    n, d = x.shape
    b = x.mean(0)
    S = torch.cov((x - b).T, correction=0)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, latent_dim, generator=g, dtype=x.dtype)
    sigma2 = S.trace() / d
    eye = torch.eye(latent_dim, dtype=x.dtype)
    history = []
    for _ in range(iterations):
        M_inv = torch.linalg.inv(W.T @ W + sigma2 * eye)
        SW = S @ W
        W_new = SW @ torch.linalg.inv(sigma2 * eye + M_inv @ W.T @ SW)
        sigma2_new = (S - SW @ M_inv @ W_new.T).trace() / d
        W, done = W_new, abs(sigma2_new - sigma2) < tol
        sigma2 = sigma2_new
        history.append(sigma2.item())
        if done:
            break
    return PPCAParams(W, b, sigma2.sqrt()), history


def baselines(train_x: torch.Tensor, test_x: torch.Tensor, latent_dim: int, components: int = 10,
              seed: int = 0) -> dict[str, float]:
    """Test log-likelihoods (nats per example) of the exact-EM models fitted to the same data.

    pPCA by closed-form ML and by EM, and a GMM by EM (full covariances up to 64 dimensions,
    diagonal above). All are densities on R^D, comparable with a Gaussian-likelihood VAE.
    """
    xtr, xte = train_x.double().cpu().reshape(len(train_x), -1), test_x.double().cpu().reshape(len(test_x), -1)
    ml = fit_ml(xtr, latent_dim)
    em, history = fit_ppca_em(xtr, latent_dim, seed=seed)
    diagonal = xtr.shape[1] > 64
    gmm = fit_gmm(xtr, components, seed=seed, diagonal=diagonal, reg=1e-6 if not diagonal else 1e-3)
    return {
        "ppca_ml_test_ll": exact_log_likelihood(xte, ml).mean().item(),
        "ppca_em_test_ll": exact_log_likelihood(xte, em).mean().item(),
        "ppca_em_iterations": len(history),
        "gmm_em_test_ll": gmm_log_likelihood(gmm, xte).mean().item(),
        "gmm_components": components,
        "gmm_covariance": "diagonal" if diagonal else "full",
        "gmm_em_iterations": len(gmm.history),
    }
