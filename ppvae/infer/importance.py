"""Per-datapoint importance log-weights of any model/guide pair: the one entry point.

:func:`log_weights` takes the fast path (:mod:`ppvae.infer.fast`) where it applies and the
generic Pyro path (:mod:`ppvae.infer.generic`) everywhere else; both the IWAE estimator and
the evaluator are built on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ppvae.infer import fast, generic
from ppvae.infer.generic import LogWeights

ELEMENT_BUDGET = 2**21  # model-output floats alive at once when scoring many samples: 8 MB in float32 (as fast as
# 32 MB chunks on CPU, 0.35 GB less peak); the evaluator's chunks and the validation bound's blocks keep to it


def log_weights(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
                k: int = 1, nesting: int | None = None, beta: float = 1.0,
                detach_guide_params: bool = False) -> LogWeights:
    """Draw k samples per data point from the guide and score them under the model.

    ``beta`` weights the latent term (``beta = 1`` is the true weight). With
    ``detach_guide_params`` the guide density is evaluated with its parameters detached
    (the "sticking the landing" path used by STL and DReG); the samples stay
    reparameterized. ``nesting`` is the pair's plate nesting, when the caller knows it.
    Raises :class:`~ppvae.errors.EstimatorError` for non-reparameterized local latents.
    """
    if fast.direct_pair(model, guide, x, y):
        d = fast.direct_pass(model, guide, x, y, k=k, detach_guide_params=detach_guide_params)
        latent = d.log_p - d.log_q
        values = (d.z,) if d.z.requires_grad else ()
        return LogWeights(d.obs, latent if beta == 1.0 else beta * latent, x.new_zeros(k), 1.0, values)
    return generic.log_weights(model, guide, x, y, k=k, nesting=nesting, beta=beta,
                               detach_guide_params=detach_guide_params)


def iwae_bound(lw: LogWeights) -> torch.Tensor:
    """Per-datapoint IWAE bound ``logsumexp_k log w - log k`` (global terms not included)."""
    k = lw.obs.shape[0]
    return torch.logsumexp(lw.log_w, dim=0) - math.log(k)


__all__ = ["LogWeights", "log_weights", "iwae_bound"]
