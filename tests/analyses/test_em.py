"""EM baselines against closed forms and scikit-learn; the exact ELBO decomposition on pPCA."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from ppvae.models import ppca
from sklearn.mixture import GaussianMixture

from ppvae.analyses.em import fit_gmm, fit_ppca_em, gmm_log_likelihood


def ppca_data(n=2000, D=8, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = ppca.PPCAParams(torch.randn(D, d, generator=g, dtype=torch.float64),
                        torch.randn(D, generator=g, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64))
    return ppca.sample(p, n, generator=g)


def test_ppca_em_converges_to_closed_form_ml():
    x = ppca_data()
    em, history = fit_ppca_em(x, 2)
    ml = ppca.fit_ml(x, 2)
    assert ppca.exact_log_likelihood(x, em).mean().item() == pytest.approx(
        ppca.exact_log_likelihood(x, ml).mean().item(), abs=1e-8)
    torch.testing.assert_close(em.W @ em.W.T, ml.W @ ml.W.T, atol=1e-4, rtol=0)
    assert em.sigma.item() == pytest.approx(ml.sigma.item(), abs=1e-6)
    assert len(history) > 5  # started away from the optimum


def test_gmm_em_matches_scikit_learn_and_increases_likelihood():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    x_np = np.concatenate([c + rng.normal(size=(400, 3)) * s for c, s in zip(centers, (0.5, 1.0, 0.8))])
    x = torch.as_tensor(x_np)
    ours = fit_gmm(x, 3, seed=0)
    sk = GaussianMixture(3, covariance_type="full", reg_covar=1e-6, tol=1e-8, max_iter=500, random_state=0).fit(x_np)
    assert gmm_log_likelihood(ours, x).mean().item() == pytest.approx(sk.score(x_np), abs=1e-4)
    assert all(b >= a - 1e-9 for a, b in zip(ours.history, ours.history[1:]))  # EM never decreases it


def test_log_px_equals_elbo_plus_kl_to_posterior_exactly():
    """log p(x) = ELBO(q) + KL(q || p(z|x)) for any Gaussian q, all three in closed form."""
    x = ppca_data(n=50)
    p = ppca.fit_ml(x, 2)
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(50, 2, generator=g, dtype=torch.float64)
    A = torch.randn(50, 2, 2, generator=g, dtype=torch.float64)
    q = dist.MultivariateNormal(loc, covariance_matrix=A @ A.transpose(-1, -2) + 0.1 * torch.eye(2, dtype=torch.float64))
    elbo = ppca.gaussian_elbo(x, p, q)
    kl = torch.distributions.kl_divergence(q, ppca.exact_posterior(x, p))
    torch.testing.assert_close(elbo + kl, ppca.exact_log_likelihood(x, p), atol=1e-10, rtol=0)
    assert (kl > 0).all()
    # the closed-form ELBO is what the Monte Carlo estimators estimate
    draws = q.sample((20000,))
    prior = dist.Normal(0.0, 1.0).expand([2]).to_event(1)
    like = dist.Normal(draws @ p.W.T + p.b, p.sigma).to_event(1)
    log_w = like.log_prob(x) + prior.log_prob(draws) - q.log_prob(draws)
    se = log_w.std(0) / math.sqrt(len(draws))
    assert ((log_w.mean(0) - elbo).abs() < 5 * se).all()


def test_baselines_on_linear_gaussian_data():
    from ppvae.analyses.em import baselines

    x = ppca_data(n=1500).float()
    res = baselines(x[:1000], x[1000:], latent_dim=2, components=3)
    assert res["ppca_em_test_ll"] == pytest.approx(res["ppca_ml_test_ll"], abs=1e-4)
    assert res["gmm_covariance"] == "full" and math.isfinite(res["gmm_em_test_ll"])
    # on data drawn from pPCA, pPCA with the true latent size is the better density model
    assert res["ppca_ml_test_ll"] > res["gmm_em_test_ll"] - 0.5


def test_diagonal_gmm_matches_scikit_learn():
    rng = np.random.default_rng(1)
    x_np = np.concatenate([rng.normal(size=(300, 4)) * [0.5, 1, 2, 0.3], 3 + rng.normal(size=(300, 4))])
    ours = fit_gmm(torch.as_tensor(x_np), 2, diagonal=True, reg=1e-6)
    sk = GaussianMixture(2, covariance_type="diag", reg_covar=1e-6, tol=1e-8, max_iter=500, random_state=0).fit(x_np)
    assert gmm_log_likelihood(ours, torch.as_tensor(x_np)).mean().item() == pytest.approx(sk.score(x_np), abs=1e-4)
