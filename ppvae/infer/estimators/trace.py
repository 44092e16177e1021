"""Pyro's Trace_ELBO: the Monte Carlo KL, Kingma & Welling's estimator A."""

from __future__ import annotations

from pyro.infer import Trace_ELBO

from ppvae import registry
from ppvae.infer import fast
from ppvae.infer.estimators.base import PyroELBO


@registry.register("estimator", "trace", local_reparam=True)
class TraceEstimator(PyroELBO):
    """Pyro Trace_ELBO: Monte Carlo KL (K&W's estimator A); num_particles samples, vectorized."""

    name = "trace"
    elbo_class = Trace_ELBO
    fast_elbo = staticmethod(fast.trace_elbo)
