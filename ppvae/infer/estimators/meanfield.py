"""Pyro's TraceMeanField_ELBO: the closed-form KL where one is registered, Kingma & Welling's estimator B."""

from __future__ import annotations

import logging
import warnings
from typing import Annotated

import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer import TraceMeanField_ELBO

from ppvae import registry
from ppvae.errors import EstimatorError
from ppvae.infer import fast, generic
from ppvae.infer.estimators.base import PyroELBO
from ppvae.registry import Param
from ppvae.sites import is_latent

log = logging.getLogger(__name__)


@registry.register("estimator", "meanfield", local_reparam=True)
class MeanFieldEstimator(PyroELBO):
    """Pyro TraceMeanField_ELBO: closed-form KL where registered (estimator B); a Monte Carlo
    fallback is warned about and recorded (estimator_notes.kl_monte_carlo_sites), or refused with strict."""

    name = "meanfield"
    elbo_class = TraceMeanField_ELBO
    fast_elbo = staticmethod(fast.meanfield_elbo)

    def __init__(self, *, strict: Annotated[bool, Param(doc="fail instead of falling back to a Monte Carlo "
                                                            "KL")] = False, **common):
        super().__init__(**common)
        self.strict = strict

    def check(self, model, guide, x, y=None) -> None:
        """Find latent sites without a registered closed-form KL: warn, record, or refuse.

        Pyro's TraceMeanField_ELBO falls back silently; here the fallback is visible."""
        guide_tr, model_tr = generic.one_pass(model, guide, x, y)
        fallback = []
        for name, site in guide_tr.nodes.items():
            if not is_latent(site) or name not in model_tr.nodes:
                continue
            try:
                kl_divergence(site["fn"], model_tr.nodes[name]["fn"])
            except NotImplementedError:
                fallback.append(f"{name}: {family_name(site['fn'])} || {family_name(model_tr.nodes[name]['fn'])}")
        self.notes["kl_monte_carlo_sites"] = fallback
        if fallback:
            msg = ("meanfield: no closed-form KL is registered for " + "; ".join(fallback) +
                   ". TraceMeanField_ELBO falls back to a Monte Carlo KL for these sites.")
            if self.strict:
                raise EstimatorError(msg + " Set estimator.strict = false to accept the fallback, or use 'trace'.")
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)


def family_name(d: torch.distributions.Distribution) -> str:
    """A distribution's name through ``to_event``: ``Independent(Normal)`` reads ``Normal``."""
    while isinstance(d, torch.distributions.Independent):
        d = d.base_dist
    return type(d).__name__
