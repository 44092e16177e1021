"""Theory vs practice (eval.theory) and the decoder-sigma figures (eval.decoder_figures)."""

import json

import numpy as np
import pytest
import torch
from linear_gaussian import D, amortized_guide, exact_guide, problem
from ppvae.models import GaussianFixed, StandardNormal, VAEModel, ppca
from torch import nn

from ppvae.analyses import theory
from ppvae.config import from_dict
from ppvae.errors import ConfigError


def _runs(folder):
    """{variant: metrics.json} of a study folder (the variant is the run folder's middle part)."""
    return {p.name.split("-")[1]: json.loads((p / "metrics.json").read_text()) for p in folder.iterdir() if p.is_dir()}


def test_linear_vae_is_read_off_its_sites_and_decomposed_exactly():
    model, p, x = problem(n=200)
    found = theory.linear_gaussian(model, x)
    torch.testing.assert_close(found.W, p.W)
    torch.testing.assert_close(found.b, p.b)
    assert found.sigma.item() == pytest.approx(0.5)
    parts = theory.decomposition(model, amortized_guide(p, scale_factor=1.5, loc_noise=0.2), x)
    assert parts["exact_test_ll"] == pytest.approx(ppca.exact_log_likelihood(x, p).mean().item(), abs=1e-10)
    assert parts["exact_decomposition_residual"] < 1e-8
    assert parts["exact_test_kl_posterior"] > 0.01
    assert parts["exact_test_elbo"] < parts["exact_test_ll"]
    exact = theory.decomposition(model, exact_guide(p), x)  # the exact posterior closes the gap
    assert exact["exact_test_kl_posterior"] == pytest.approx(0.0, abs=1e-8)
    assert exact["exact_test_elbo"] == pytest.approx(exact["exact_test_ll"], abs=1e-8)


def test_nonlinear_pair_has_no_exact_decomposition():
    model, p, x = problem(n=20)
    decoder = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, D)).double()
    nonlinear = VAEModel(StandardNormal(2), decoder, GaussianFixed(sigma=0.5)).double()
    assert theory.linear_gaussian(nonlinear, x) is None
    assert theory.decomposition(nonlinear, amortized_guide(p), x) == {}


def test_theory_refuses_bernoulli_and_conditional_pairs():
    with pytest.raises(ConfigError, match="eval.theory compares densities on R.D: it needs a likelihood for real"):
        from_dict({"model": {"likelihood": "bernoulli"}, "data": {"binarize": "dynamic"}, "eval": {"theory": True}})
    with pytest.raises(ConfigError, match="eval.theory compares with unconditional baselines"):
        from_dict({"model": {"likelihood": "gaussian_learned", "conditional": True}, "eval": {"theory": True}})


def test_theory_vs_practice_smoke_numbers(study_smoke):
    folder = study_smoke("theory_vs_practice")
    runs = _runs(folder)
    linear, nonlinear = runs["linear"], runs["nonlinear"]
    assert linear["exact_decomposition_residual"] < 1e-4
    assert linear["exact_test_kl_posterior"] >= 0
    # the Monte Carlo ELBO and IWAE bound of the evaluator against the exact values
    assert linear["test_elbo"] == pytest.approx(linear["exact_test_elbo"], abs=0.5)
    assert linear["exact_test_elbo"] <= linear["test_ll"] <= linear["exact_test_ll"] + 0.05
    for m in runs.values():  # EM reaches the closed-form ML pPCA on the same data
        assert abs(m["ppca_em_test_ll"] - m["ppca_ml_test_ll"]) < 1e-3
        assert np.isfinite(m["gmm_em_test_ll"]) and m["gmm_covariance"] == "full"
    assert "exact_test_ll" not in nonlinear and nonlinear["ppca_ml_test_ll"] == linear["ppca_ml_test_ll"]
    report = next(p for p in folder.iterdir() if p.name.startswith("theory_vs_practice-linear")) / "report.md"
    assert "| pPCA, closed-form ML |" in report.read_text() and "KL(q(z\\|x)" in report.read_text()


def test_decoder_sigma_smoke_figures(study_smoke):
    folder = study_smoke("decoder_sigma")
    assert (folder / "posteriors.png").stat().st_size > 10_000
    run_dirs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(run_dirs) == 5  # beta 0.1, 1, 10, 100 and the per-pixel sigma
    for run in run_dirs:
        assert (run / "decoder_samples.png").is_file() and (run / "posterior_ellipses.png").is_file()
        with np.load(run / "posterior_2d.npz") as f:
            assert f["loc"].shape == f["scale"].shape == (len(f["labels"]), 2) and len(f["labels"]) > 300
            assert np.isfinite(f["loc"]).all() and (f["scale"] > 0).all()
    assert _runs(folder)["per_pixel_sigma"]["likelihood_stage"] == 2
