"""Gaussian pixels with one global sigma set in closed form, and the two-stage per-pixel sigma."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Annotated

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry
from ppvae.registry import Param

from .gaussian import SIGMA

log = logging.getLogger(__name__)
FLOOR = Param("> 0", "lower limit of the closed-form sigma")


def optimal_sigma(mean: torch.Tensor, x: torch.Tensor, floor: float) -> torch.Tensor:
    """The sigma that maximizes sum log N(x | mean, sigma^2) for fixed reconstructions.

    Setting d/dsigma = 0 gives sigma^2 = mean squared error over every data point and pixel;
    ``floor`` keeps a perfect fit (or a tiny batch) from sending sigma, and the density, to 0/infinity.
    """
    return (x - mean).pow(2).mean().sqrt().clamp_min(floor)


@registry.register("likelihood", "gaussian_optimal", closed_form_update=True)
class GaussianOptimal(nn.Module):
    """Gaussian pixels with one global sigma set in closed form: sigma^2 = MSE (the "optimal sigma" VAE).

    Training alternates: after every network step the trainer calls ``after_step``, which sets
    sigma to its exact optimum (:func:`optimal_sigma`) for the batch just used, with z drawn
    from the guide; the next network step uses that sigma. Before evaluation :meth:`fit` sets it
    to the optimum over the whole training set (one pass), not the last batch's.
    sigma never drops below ``floor`` (default 1e-3, the quantization noise of 8-bit images,
    (1/255)/sqrt(12) = 1.1e-3, so it binds only for a degenerate fit).
    """

    outputs_per_pixel = 1

    def __init__(self, *, sigma: Annotated[float, SIGMA] = 1.0, sigma_floor: Annotated[float, FLOOR] = 1e-3):
        super().__init__()
        self.floor = sigma_floor
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def after_step(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """The closed-form sigma update for decoder outputs ``out`` of the batch ``x``."""
        self.sigma.copy_(optimal_sigma(self.mean(out), x, self.floor))

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """sigma^2 = the mean squared error over every (decoder output, data) batch: the training set's optimum."""
        total, count = 0.0, 0
        for out, x in batches:  # summed on the device in float64: one host sync at the end, not one per batch
            total = total + (x - self.mean(out)).double().pow(2).sum()
            count += x.numel()
        self.sigma.fill_(max(math.sqrt(float(total) / count), self.floor))


@registry.register("likelihood", "gaussian_perpixel", closed_form_update=True)
class GaussianPerPixel(GaussianOptimal):
    """Gaussian with a per-pixel, input-dependent sigma from a decoder head, trained in two stages.

    The decoder has two outputs per pixel: the mean and a raw scale (the head).

    * Stage one ignores the head: one global sigma, updated in closed form as in
      :class:`GaussianOptimal`. At each epoch end the epoch's sigma (root of the mean of its
      batches' squared errors) is compared with the previous epoch's; stage one ends when it
      changed by less than ``tol`` (relative), or after ``max_epochs`` epochs at the latest.
    * Stage two switches the head on, continuing from the stage-one weights, and freezes the
      stage-one sigma as a lower bound: sigma_pixel = sigma_min * (1 + softplus(raw - HEAD_OFFSET)),
      so it never falls below sigma_min. The offset makes an untrained head start close to
      sigma_min (no jump in the loss at the switch).

    The switch is logged (a log line) and recorded in the per-epoch metrics (``likelihood_stage``,
    ``stage_switch_epoch``).
    """

    outputs_per_pixel = 2
    HEAD_OFFSET = 4.0

    def __init__(self, *,
                 stage_one_tol: Annotated[float, Param("> 0", "stage one ends when the epoch's sigma changes by "
                                                              "less than this (relative)")] = 0.01,
                 stage_one_max_epochs: Annotated[int, Param(">= 1", "stage one ends after this many epochs at "
                                                                    "the latest")] = 20,
                 **optimal):
        super().__init__(**optimal)
        self.tol, self.max_epochs = stage_one_tol, stage_one_max_epochs
        self.stage, self.switch_epoch, self.epoch_sigmas = 1, 0, []
        self.register_buffer("_epoch_sq_error", torch.zeros(()))  # running sums of this epoch (no host sync)
        self.register_buffer("_epoch_batches", torch.zeros(()))

    def scale(self, out: torch.Tensor) -> torch.Tensor:
        """Per-pixel sigma: the global sigma in stage one, the bounded head in stage two."""
        loc, raw = out.chunk(2, dim=-1)
        if self.stage == 1:
            return self.sigma.expand_as(loc)
        return self.sigma * (1 + F.softplus(raw - self.HEAD_OFFSET))

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(self.mean(out), self.scale(out)).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.chunk(2, dim=-1)[0]

    def after_step(self, out: torch.Tensor, x: torch.Tensor) -> None:
        if self.stage == 1:
            super().after_step(out, x)
            self._epoch_sq_error += self.sigma ** 2
            self._epoch_batches += 1

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Stage one's global sigma fitted to the training set; in stage two it is the head's lower bound: kept."""
        if self.stage == 1:
            super().fit(batches)

    def on_epoch_end(self, epoch: int) -> None:
        """Stage one's convergence test; switch the head on when it passes."""
        if self.stage != 1 or not float(self._epoch_batches):
            return
        sigma = math.sqrt(float(self._epoch_sq_error / self._epoch_batches))
        self._epoch_sq_error.zero_()
        self._epoch_batches.zero_()
        previous = self.epoch_sigmas[-1] if self.epoch_sigmas else None
        self.epoch_sigmas.append(sigma)
        converged = previous is not None and abs(sigma - previous) <= self.tol * previous
        if converged or epoch >= self.max_epochs:
            self.stage, self.switch_epoch = 2, epoch
            self.sigma.fill_(sigma)
            why = f"relative change {abs(sigma - previous) / previous:.4f} <= {self.tol}" if converged \
                else f"stage_one_max_epochs = {self.max_epochs} reached"
            log.warning("gaussian_perpixel: stage two (per-pixel sigma head) starts after epoch %d (%s); "
                        "lower bound sigma_min = %.5f", epoch, why, float(self.sigma))

    def metrics(self) -> dict[str, float]:
        return {"likelihood_stage": self.stage, "stage_switch_epoch": self.switch_epoch,
                "stage_one_epoch_sigma": self.epoch_sigmas[-1] if self.epoch_sigmas else float("nan")}

    def get_extra_state(self) -> dict:
        return {"stage": self.stage, "switch_epoch": self.switch_epoch, "epoch_sigmas": list(self.epoch_sigmas)}

    def set_extra_state(self, state: dict) -> None:
        self.stage, self.switch_epoch = state["stage"], state["switch_epoch"]
        self.epoch_sigmas = list(state["epoch_sigmas"])


__all__ = ["optimal_sigma", "GaussianOptimal", "GaussianPerPixel"]
