"""Beta and Kumaraswamy codes in logit coordinates, and closed-form KL divergences torch lacks.

A sparse Beta(a, b) prior (a, b < 1) puts its mass within float32 rounding of 0 and 1: a
Beta(0.2, 0.2) draw lies within 1.2e-7 of an end 4% of the time, and a guide fitted to it
more often. Sampled and scored as a value in (0, 1), such a draw is rounded to 0 or 1 (an
infinite density) or must be clamped, and scoring clamped values misstates the KL: in
training, a Kumaraswamy guide drove its concentrations to zero and its "bound" above
log p(x). Here the latent value is ``u = logit(x)`` instead. Its density is exact for every
u (``log x = logsigmoid(u)``, ``log(1 - x) = logsigmoid(-u)``), draws are formed in log space
without rounding, and the decoder reads ``x = sigmoid(u)``. KL divergences do not change
under the bijection, so the closed forms for x apply.

Importing this module registers, with ``torch.distributions.kl.register_kl``:

* ``KL(Kumaraswamy(a, b) || Beta(alpha, beta))`` (Nalisnick & Smyth 2017, "Stick-breaking
  variational autoencoders", section 3.1), for torch's classes and for the logit versions,
  with the series in it summed to ``KUMARASWAMY_TERMS`` terms plus an asymptotic tail. The
  terms decay like ``m^(-1-b)``, so the paper's 10 terms without a tail leave an error of
  order ``Gamma(b) a^b 10^-b``: tenths of a nat for b < 1.
* ``KL(LogitBeta || LogitBeta)`` (torch's Beta-Beta formula).
* ``KL(LowRankMultivariateNormal || Independent(Normal, 1))``: a low-rank Gaussian guide
  against a diagonal Gaussian prior.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, constraints
from torch.distributions import kl as torch_kl
from torch.distributions.utils import broadcast_all

MIN_SCALE = 1e-5  # floor of every posterior sd (the Normal, low-rank and flow families, the weight posterior)
KUMARASWAMY_TERMS = 128
TAIL_TERMS = 6
EULER_GAMMA = 0.5772156649015329
# below log w = -15 (w = u^(1/b) < 3e-7), log(1 - x) = log w - log a to float32 precision
SMALL_LOG_W = -15.0
# above u = 30, 1 - x^a = a (1 - x) to float32 precision
LARGE_LOGIT = 30.0


def _log_gamma_variate(concentration: torch.Tensor) -> torch.Tensor:
    """log G for G ~ Gamma(concentration, 1), reparameterized and exact for tiny concentrations:
    ``G = G' U^(1/c)`` with ``G' ~ Gamma(c + 1)`` (torch's implicit gradient) and U uniform."""
    boosted = torch.distributions.Gamma(concentration + 1, torch.ones_like(concentration)).rsample()
    u = torch.rand_like(concentration).clamp_min(torch.finfo(concentration.dtype).tiny)
    return boosted.log() + u.log() / concentration


class _LogitUnit(dist.TorchDistribution):
    """A distribution of ``u = logit(x)`` for x on (0, 1) with concentrations (a, b)."""

    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, concentration1: torch.Tensor | float, concentration0: torch.Tensor | float,
                 validate_args: bool | None = None):
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance=None) -> "_LogitUnit":
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.concentration1 = self.concentration1.expand(batch_shape)
        new.concentration0 = self.concentration0.expand(batch_shape)
        super(_LogitUnit, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _params(self, sample_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self._extended_shape(sample_shape)
        return self.concentration1.expand(shape), self.concentration0.expand(shape)


class LogitBeta(_LogitUnit):
    """u = logit(x), x ~ Beta(a, b): density ``sigmoid(u)^a sigmoid(-u)^b / B(a, b)``.

    Draws are ``log G_a - log G_b`` for Gamma variates formed in log space.
    """

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        a, b = self._params(sample_shape)
        return _log_gamma_variate(a) - _log_gamma_variate(b)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
        return a * F.logsigmoid(value) + b * F.logsigmoid(-value) - log_beta

    @property
    def mean(self) -> torch.Tensor:
        return torch.digamma(self.concentration1) - torch.digamma(self.concentration0)

    @property
    def variance(self) -> torch.Tensor:
        return torch.polygamma(1, self.concentration1) + torch.polygamma(1, self.concentration0)

    @property
    def code_mean(self) -> torch.Tensor:
        """E[sigmoid(u)] = a / (a + b): the mean of the code on (0, 1)."""
        return self.concentration1 / (self.concentration1 + self.concentration0)


class LogitKumaraswamy(_LogitUnit):
    """u = logit(x), x ~ Kumaraswamy(a, b), density of x ``a b x^(a-1) (1 - x^a)^(b-1)``.

    Draws invert the CDF in log space, ``x = (1 - w)^(1/a)`` with ``w = v^(1/b)``, v uniform.
    """

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        a, b = self._params(sample_shape)
        v = torch.rand_like(a).clamp_min(torch.finfo(a.dtype).tiny)
        log_w = v.log() / b
        log_x = torch.log(-torch.expm1(log_w)) / a
        small = log_w < SMALL_LOG_W
        log_1mx = torch.where(small, log_w - a.log(), torch.log(-torch.expm1(torch.where(small, -1.0, log_x))))
        return log_x - log_1mx

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        log_x, log_1mx = F.logsigmoid(value), F.logsigmoid(-value)
        large = value > LARGE_LOGIT
        log_1m_xa = torch.where(large, a.log() + log_1mx,
                                torch.log(-torch.expm1(a * torch.where(large, -1.0, log_x))))
        return a.log() + b.log() + a * log_x + log_1mx + (b - 1) * log_1m_xa

    @property
    def mean(self) -> torch.Tensor:
        a, b = self.concentration1, self.concentration0
        return (-EULER_GAMMA - torch.digamma(b) - 1 / b) / a - kumaraswamy_expected_log1m(a, b)

    @property
    def code_mean(self) -> torch.Tensor:
        """E[sigmoid(u)] = b B(1 + 1/a, b): the mean of the code on (0, 1)."""
        a, b = self.concentration1, self.concentration0
        return torch.exp(b.log() + torch.lgamma(1 + 1 / a) + torch.lgamma(b) - torch.lgamma(1 + 1 / a + b))


def kumaraswamy_expected_log1m(a: torch.Tensor, b: torch.Tensor, terms: int = KUMARASWAMY_TERMS) -> torch.Tensor:
    """E[log(1 - x)] for x ~ Kumaraswamy(a, b): ``-b sum_m B(m/a, b) / (m + a b)``.

    The first ``terms`` terms are summed exactly. The rest use ``Gamma(z) / Gamma(z + b) ~
    (z + (b - 1)/2)^-b`` (z = m/a) and are integrated from ``terms + 1/2`` as a series in
    ``1/w``. Against a sum of 400,000 terms the error is below 1e-4 nats for a <= 20 and
    2e-2 at a = 100 (the tail series needs a < terms); computed in float64, because
    ``lgamma(m/a)`` for small a is too large for float32 to difference.
    """
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.double(), b.double()
    m = torch.arange(1, terms + 1, dtype=a.dtype, device=a.device).reshape((terms,) + (1,) * a.dim())
    lbeta = torch.lgamma(m / a) + torch.lgamma(b) - torch.lgamma(m / a + b)
    head = (lbeta.exp() / (m + a * b)).sum(0)
    # tail: b Gamma(b) sum_{m > terms} (m/a + c)^-b / (m + a b) with c = (b - 1)/2; substituting
    # w = m/a + c gives integral_{w0}^inf w^-b / (w + d) dw = sum_j (-d)^j w0^(-b-j) / (b + j)
    c, d = (b - 1) / 2, (b + 1) / 2
    w0 = (terms + 0.5) / a + c
    tail = sum((-d) ** j * w0 ** (-b - j) / (b + j) for j in range(TAIL_TERMS)) * torch.lgamma(b).exp()
    return (-b * (head + tail)).to(dtype)


def kl_kumaraswamy_beta(q: dist.Distribution, p: dist.Distribution) -> torch.Tensor:
    """KL(Kumaraswamy(a, b) || Beta(alpha, beta)), Nalisnick & Smyth (2017)."""
    a, b = q.concentration1, q.concentration0
    alpha, beta = p.concentration1, p.concentration0
    a_e_log_x = -EULER_GAMMA - torch.digamma(b) - 1 / b  # a * E[log x]
    log_beta_fn = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return ((a - alpha) / a * a_e_log_x + torch.log(a * b) + log_beta_fn - (b - 1) / b
            - (beta - 1) * kumaraswamy_expected_log1m(a, b))


def kl_logit_beta(q: LogitBeta, p: LogitBeta) -> torch.Tensor:
    """KL(Beta(a, b) || Beta(alpha, beta)); the logit does not change it."""
    return torch_kl.kl_divergence(torch.distributions.Beta(q.concentration1, q.concentration0),
                                  torch.distributions.Beta(p.concentration1, p.concentration0))


def kl_lowrank_diagonal(q: torch.distributions.LowRankMultivariateNormal, p: Independent) -> torch.Tensor:
    """KL(N(mu, W W^T + D) || N(m, diag(s^2))) for a diagonal prior with one event dimension."""
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    var = p.base_dist.scale**2
    trace = ((q.cov_factor**2).sum(-1) + q.cov_diag) / var
    mahalanobis = (q.loc - p.base_dist.loc) ** 2 / var
    d = q.event_shape[0]
    log_det_q = 2 * q.entropy() - d * (1 + math.log(2 * math.pi))  # entropy = d/2 (1 + log 2 pi) + log det / 2
    return 0.5 * ((trace + mahalanobis).sum(-1) - d + var.log().sum(-1) - log_det_q)


torch_kl.register_kl(torch.distributions.Kumaraswamy, torch.distributions.Beta)(kl_kumaraswamy_beta)
torch_kl.register_kl(LogitKumaraswamy, LogitBeta)(kl_kumaraswamy_beta)
torch_kl.register_kl(LogitBeta, LogitBeta)(kl_logit_beta)
torch_kl.register_kl(torch.distributions.LowRankMultivariateNormal, Independent)(kl_lowrank_diagonal)

__all__ = ["MIN_SCALE", "LogitBeta", "LogitKumaraswamy", "kl_kumaraswamy_beta", "kl_logit_beta", "kl_lowrank_diagonal",
           "kumaraswamy_expected_log1m", "KUMARASWAMY_TERMS"]
