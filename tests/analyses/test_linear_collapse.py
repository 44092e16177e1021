"""eval.linear_collapse: sigma decides which units of a linear VAE collapse (Lucas et al., 2019), checked by
training one on data whose covariance spectrum straddles sigma^2."""

import numpy as np
import pytest
import torch
from ppvae.models import ppca

import ppvae
from ppvae.analyses.linear_collapse import fixed_sigma_ppca, prediction

SPECTRUM = (9.0, 4.0, 2.0, 0.6, 0.3, 0.1)  # sigma^2 = 1: three directions kept, three dropped
LATENT = 4


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((len(SPECTRUM), len(SPECTRUM))))
    return (rng.standard_normal((n, len(SPECTRUM))) * np.sqrt(SPECTRUM)) @ rotation.T + 0.5


def test_the_fixed_sigma_solution_is_the_ppca_maximum_at_that_sigma():
    x = torch.as_tensor(_data(4000))
    params, lam = fixed_sigma_ppca(x, LATENT, 1.0)
    assert lam.tolist() == sorted(lam.tolist(), reverse=True) and len(lam) == LATENT
    best = ppca.exact_log_likelihood(x, params).mean()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # any other W at the same sigma fits the training data worse
        W = params.W + 0.05 * torch.randn(params.W.shape, generator=g, dtype=torch.float64)
        assert ppca.exact_log_likelihood(x, ppca.PPCAParams(W, params.b, params.sigma)).mean() < best
    m = prediction(x, x, LATENT, 1.0)
    assert (m["ppca_kept_units"], m["ppca_active_units"]) == (3, 3)
    assert m["ppca_units_for_90pct_kl"] == 3  # per-unit KLs log(lambda_i) / 2: 1.10, 0.69, 0.35 of 2.14 nats
    # on the training points the optimum's KL is sum over kept directions of log(lambda_i / sigma^2) / 2
    assert m["ppca_test_kl"] == pytest.approx(0.5 * torch.log(lam[:3]).sum().item(), rel=1e-6)
    assert prediction(x, x, LATENT, 0.5)["ppca_kept_units"] == 4  # sigma^2 = 0.25: all four latent units kept


def test_a_trained_linear_vae_collapses_the_units_the_spectrum_predicts(tmp_path):
    np.savez(tmp_path / "spectrum.npz", x=_data(3000).astype(np.float32))
    run = ppvae.run({
        "name": "collapse", "data": {"name": "npz", "path": str(tmp_path / "spectrum.npz"), "scale": "real",
                                     "test_fraction": 0.2},
        "model": {"latent_dim": LATENT, "likelihood": {"name": "gaussian_fixed", "sigma": 1.0},
                  "decoder": {"hidden": []}},
        "guide": {"family": "normal", "encoder": {"hidden": []}},
        "estimator": {"name": "meanfield"},
        "train": {"optimizer": "adam", "lr": 0.02, "batch_size": 100, "epochs": 40, "seed": 0},
        "eval": {"k": 100, "linear_collapse": True}}, out=tmp_path)
    m = run.metrics
    assert m["ppca_active_units"] == 3
    assert m["active_units"] == m["ppca_active_units"]
    assert m["test_kl"] == pytest.approx(m["ppca_test_kl"], rel=0.05)
    assert m["test_ll"] == pytest.approx(m["ppca_fixed_sigma_test_ll"], abs=0.05)
