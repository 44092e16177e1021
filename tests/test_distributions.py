"""Beta and Kumaraswamy codes in logit coordinates, the closed-form KLs torch lacks, and the numerics of the
low-rank and flow families."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppvae.guides.families.flow import InverseAutoregressiveFlow
from ppvae.guides.families.lowrank import LowRankNormal
from scipy.special import betainc

from ppvae.distributions import LogitBeta, LogitKumaraswamy


@pytest.mark.parametrize("cls", [LogitBeta, LogitKumaraswamy])
def test_logit_draws_and_densities_are_exact_where_codes_round_to_0_or_1(cls):
    """Concentrations far below 1 put most codes within float32 rounding of 0 or 1; in logit
    coordinates the draws stay finite, the density integrates to one and matches the draws."""
    conc = torch.tensor([1e-3, 0.05, 0.2, 1.0, 30.0])
    u = cls(conc[:, None], conc[None, :]).rsample((2000,))
    assert torch.isfinite(u).all() and torch.isfinite(cls(conc[:, None], conc[None, :]).log_prob(u)).all()
    assert (torch.sigmoid(u) == 0).any() and (torch.sigmoid(u) == 1).any()  # what a value in (0, 1) could not hold
    a, b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64)
    d = cls(a, b)
    grid = torch.linspace(-600, 600, 600_001, dtype=torch.float64)
    assert torch.trapezoid(d.log_prob(grid).exp(), grid).item() == pytest.approx(1.0, abs=1e-3)
    below = (d.sample((200_000,)) < math.log(0.3 / 0.7)).double().mean().item()  # P(code < 0.3)
    cdf = 1 - (1 - 0.3**a) ** b if cls is LogitKumaraswamy else betainc(float(a), float(b), 0.3)
    assert below == pytest.approx(float(cdf), abs=4e-3)


@pytest.mark.parametrize("a, b, alpha, beta", [
    (0.5, 0.5, 0.2, 0.2), (2.0, 0.3, 0.2, 0.2), (0.3, 3.0, 0.5, 0.8), (5.0, 2.0, 1.0, 1.0), (1.0, 1.0, 0.1, 0.3),
    (12.0, 0.8, 0.2, 0.2), (0.2, 50.0, 0.2, 0.2), (0.05, 5.0, 0.2, 0.2),
])
def test_kumaraswamy_beta_kl_matches_monte_carlo(a, b, alpha, beta):
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    q, p = LogitKumaraswamy(f64(a), f64(b)), LogitBeta(f64(alpha), f64(beta))
    closed = torch.distributions.kl_divergence(q, p).item()
    u = q.sample((200_000,))
    log_ratio = q.log_prob(u) - p.log_prob(u)
    se = log_ratio.std().item() / math.sqrt(len(u))
    assert closed == pytest.approx(log_ratio.mean().item(), abs=4 * se + 1e-3), (closed, log_ratio.mean().item(), se)
    # the same closed form is registered for torch's own classes
    plain = torch.distributions.kl_divergence(torch.distributions.Kumaraswamy(f64(a), f64(b)),
                                              torch.distributions.Beta(f64(alpha), f64(beta)))
    assert plain.item() == pytest.approx(closed)


def test_kumaraswamy_beta_kl_is_differentiable_and_zero_where_they_coincide():
    # Kumaraswamy(1, b) = Beta(1, b): the KL vanishes there
    b = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    kl = torch.distributions.kl_divergence(LogitKumaraswamy(torch.ones_like(b), b), LogitBeta(torch.ones_like(b), b.detach()))
    torch.testing.assert_close(kl, torch.zeros_like(kl), atol=1e-6, rtol=0)
    kl.sum().backward()
    assert torch.isfinite(b.grad).all()


def test_lowrank_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    loc, factor = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    q = dist.LowRankMultivariateNormal(loc, factor, torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1)
    p = dist.Normal(torch.zeros(5, dtype=torch.float64), torch.full((5,), 1.5, dtype=torch.float64)).to_event(1)
    closed = torch.distributions.kl_divergence(q, p)
    full = dist.MultivariateNormal(p.base_dist.loc, torch.diag(p.base_dist.scale**2))
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, full))


def test_lowrank_guide_stays_finite_for_small_posterior_scales():
    """Posterior sds of 1e-3 with a large factor: float32 log-densities still match float64 ones."""
    family = LowRankNormal(16, rank=16)
    raw_scale = torch.full((4, 16), -7.0)  # softplus(-7) ~ 1e-3
    q = family(torch.cat([torch.zeros(4, 16), raw_scale, torch.randn(4, 16 * 16) * 30], -1))
    z = q.rsample()
    exact = dist.MultivariateNormal(q.loc.double(), q.covariance_matrix.double()).log_prob(z.double())
    torch.testing.assert_close(q.log_prob(z).double(), exact, rtol=1e-3, atol=0.05)


def test_flow_guide_scores_its_own_draws_like_fresh_points():
    """The IAF caches its inputs when sampling; scoring a copy of a draw inverts the layers instead."""
    pyro.set_rng_seed(1)
    family = InverseAutoregressiveFlow(4, layers=2, hidden=(16,), context=8)
    q = family(torch.randn(6, family.outputs))
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), atol=1e-4, rtol=1e-4)
    assert q.batch_shape == (6,) and q.event_shape == (4,)


def test_the_normal_family_reads_softplus_or_log_variance():
    from ppvae.distributions import MIN_SCALE
    from ppvae.guides.families.normal import DiagonalNormal

    out = torch.randn(5, 6)
    loc, raw = out.chunk(2, dim=-1)
    soft = DiagonalNormal(3)(out).base_dist
    logvar = DiagonalNormal(3, scale="exp")(out).base_dist
    assert torch.equal(soft.loc, loc) and torch.equal(logvar.loc, loc)
    torch.testing.assert_close(soft.scale, torch.nn.functional.softplus(raw) + MIN_SCALE)
    torch.testing.assert_close(logvar.scale, torch.exp(0.5 * raw) + MIN_SCALE)
