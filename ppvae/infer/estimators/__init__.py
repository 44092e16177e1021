"""ELBO estimators, chosen by name, behind one interface.

Every estimator turns ``(model, guide, x, y)`` into an :class:`Objective`: a scalar to
differentiate (``surrogate``) and the value of the bound it estimates, both summed over
the batch and negated (a loss, in nats). The trainer scales the surrogate by 1/batch size
before ``backward`` so learning rates do not depend on the batch size.

Each file here registers one estimator (kind ``estimator``, the ``[estimator]`` section);
its keyword arguments are its parameters, and every estimator also takes the KL weight of
:class:`Estimator` (``beta``, annealed from ``beta_start`` over ``anneal_epochs``).
"""

from __future__ import annotations

from ppvae import registry
from ppvae.infer.estimators.base import Estimator, KLWeight, Objective, PyroELBO
from ppvae.registry import Spec


def make_estimator(spec: Spec | str | dict) -> Estimator:
    """The estimator an ``[estimator]`` section names (a spec, a name, or a table such as ``{name = "iwae", k = 5}``)."""
    if not isinstance(spec, Spec):
        spec = registry.spec("estimator", spec, "estimator")
    return spec.create()


registry.discover(__name__)

__all__ = ["Objective", "KLWeight", "Estimator", "PyroELBO", "make_estimator"]
