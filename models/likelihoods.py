"""Likelihoods p(x|z): map decoder outputs to a distribution over the flat image.

Every part in models/ and guides/ is registered by name and built by ``from_config(cfg, data)``,
so adding one is a class and a registry entry; ``ppvae.build`` stays generic.

Each likelihood says how many decoder outputs it needs per pixel (``outputs_per_pixel``)
and owns its own parameters (a learned sigma), so swapping it swaps the whole observation
model without touching the decoder.
"""

from __future__ import annotations

import logging
import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset

log = logging.getLogger(__name__)


class Bernoulli(nn.Module):
    """Bernoulli pixels with logits from the decoder; needs binary data."""

    outputs_per_pixel = 1
    needs_binary_data = True

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "Bernoulli":
        return cls()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class GaussianFixed(nn.Module):
    """Gaussian pixels with a fixed sigma: the "least squares" VAE (sigma^2 = 0.5 is K&W's weighting)."""

    outputs_per_pixel = 1
    needs_binary_data = False

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianFixed":
        return cls(cfg.model.sigma)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


class GaussianLearned(GaussianFixed):
    """Gaussian pixels with one global sigma learned by gradient (parameterized as log sigma)."""

    def __init__(self, sigma: float = 1.0):
        nn.Module.__init__(self)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()


class GaussianMeanVar(nn.Module):
    """Gaussian with decoder-predicted mean and log-variance per pixel (Kingma & Welling eq. 10-11)."""

    outputs_per_pixel = 2
    needs_binary_data = False

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianMeanVar":
        return cls()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        loc, log_var = out.chunk(2, dim=-1)
        return dist.Normal(loc, (0.5 * log_var).exp()).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.chunk(2, dim=-1)[0]


def optimal_sigma(mean: torch.Tensor, x: torch.Tensor, floor: float) -> torch.Tensor:
    """The sigma that maximizes sum log N(x | mean, sigma^2) for fixed reconstructions.

    Setting d/dsigma = 0 gives sigma^2 = mean squared error over every data point and pixel;
    ``floor`` keeps a perfect fit (or a tiny batch) from sending sigma, and the density, to 0/infinity.
    """
    return (x - mean).pow(2).mean().sqrt().clamp_min(floor)


class GaussianOptimal(nn.Module):
    """Gaussian pixels with one global sigma set in closed form: sigma^2 = MSE (the "optimal sigma" VAE).

    Training alternates: after every network step the trainer calls ``after_step``, which sets
    sigma to its exact optimum (:func:`optimal_sigma`) for the batch just used, with z drawn
    from the guide; the next network step uses that sigma. Evaluation uses the last value.
    sigma never drops below ``floor`` (default 1e-3, the quantization noise of 8-bit images,
    (1/255)/sqrt(12) = 1.1e-3, so it binds only for a degenerate fit).
    """

    outputs_per_pixel = 1
    needs_binary_data = False

    def __init__(self, sigma: float = 1.0, floor: float = 1e-3):
        super().__init__()
        self.floor = floor
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianOptimal":
        return cls(cfg.model.sigma, cfg.model.sigma_floor)

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def after_step(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """The closed-form sigma update for decoder outputs ``out`` of the batch ``x``."""
        self.sigma.copy_(optimal_sigma(self.mean(out), x, self.floor))


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

    def __init__(self, sigma: float = 1.0, floor: float = 1e-3, tol: float = 0.01, max_epochs: int = 20):
        super().__init__(sigma, floor)
        self.tol, self.max_epochs = tol, max_epochs
        self.stage, self.switch_epoch, self.epoch_sigmas = 1, 0, []
        self.register_buffer("_epoch_sq_error", torch.zeros(()))  # running sums of this epoch (no host sync)
        self.register_buffer("_epoch_batches", torch.zeros(()))

    @classmethod
    def from_config(cls, cfg: Config, data: Dataset) -> "GaussianPerPixel":
        m = cfg.model
        return cls(m.sigma, m.sigma_floor, m.stage_one_tol, m.stage_one_max_epochs)

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


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": Bernoulli,
    "gaussian_fixed": GaussianFixed,
    "gaussian_learned": GaussianLearned,
    "gaussian_optimal": GaussianOptimal,
    "gaussian_perpixel": GaussianPerPixel,
    "gaussian_meanvar": GaussianMeanVar,
}

__all__ = ["Bernoulli", "GaussianFixed", "GaussianLearned", "GaussianOptimal", "GaussianPerPixel", "GaussianMeanVar",
           "LIKELIHOODS", "optimal_sigma"]
