"""Checks that a model/guide pair keeps the pair contract, run once on its first batch.

A broken pair otherwise fails deep inside Pyro or PyTorch with a traceback through the
estimator; here it fails before training with one :class:`~ppvae.errors.PairError` that says
which side broke, on what batch, and the original error in one line.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine

from ppvae.errors import PairError, reported_as
from ppvae.sites import is_latent


def _shape(t: torch.Size) -> str:
    return str(list(t))


def check_pair(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Run guide and model once on ``x`` and check that their sites fit each other and the data.

    The model runs on its own prior draws (not the guide's), so a latent-size mismatch is
    reported as such instead of as a matrix-shape error inside the decoder.
    """
    batch = f"a batch of {x.shape[0]} images of {x.shape[1:].numel()} values"
    with reported_as(f"The guide failed on its first batch ({batch})"):
        guide_tr = poutine.trace(guide).get_trace(x, y)
    with reported_as(f"The model failed on its first batch ({batch})"):
        model_tr = poutine.trace(model).get_trace(x, y)
    for name, site in guide_tr.nodes.items():
        if not is_latent(site) or name not in model_tr.nodes:
            continue
        q, p = site["value"].shape, model_tr.nodes[name]["value"].shape
        if q != p:
            raise PairError(
                f"The guide's latent site {name!r} has shape {_shape(q)} but the model's prior draws it with "
                f"shape {_shape(p)}. Make the encoder output the model's latent size (model.latent_dim, or "
                "the prior of your own pair).")
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        fn_shape, value_shape = site["fn"].shape(), site["value"].shape
        try:
            fits = torch.broadcast_shapes(fn_shape, value_shape) == value_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise PairError(
                f"The model's observed site {name!r} has distribution shape {_shape(fn_shape)} but the data "
                f"batch has shape {_shape(value_shape)}: the decoder's output does not fit images of "
                f"{x.shape[1:].numel()} values. Check the decoder's output size against the data.")
    with reported_as(f"The model failed to score its first batch ({batch})"):
        model_tr.compute_log_prob()
    with reported_as(f"The guide failed to score its first batch ({batch})"):
        guide_tr.compute_log_prob()


__all__ = ["check_pair"]
