"""The guide of a Bayesian-decoder VAE: a mean-field Normal over the decoder weights plus the
amortized q(z|x); the pair builder; initialization from a point-estimate run; predictive evaluation.

See :mod:`ppvae.models.bayesian` for the model, the B/N scaling of the weight sites and why
each call draws its weights once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppvae import runs
from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError
from ppvae.evaluate import batch_like, model_site
from ppvae.importance import iwae_bound, log_weights
from ppvae.models import PRIORS
from ppvae.models.bayesian import (BayesianMLP, BayesianVAEModel, Preset, WeightLink, WeightPrior, plate_shape,
                                   weight_draws)
from ppvae.nn import make_network

from .posteriors import FAMILIES, MIN_SCALE
from .vae import VAEGuide

LOCAL_REPARAM_ESTIMATORS = ("trace", "meanfield")


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class WeightPosterior(nn.Module):
    """q(W) = prod_i N(mu_i, sigma_i^2) over every decoder weight, sigma = softplus(rho) + 1e-5.

    Means start like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)), or from a point estimate
    (:func:`init_from_run`); every sigma starts at ``init_scale``, small, so training starts
    near a point-estimate decoder and widens the posterior where the data allow.
    """

    def __init__(self, shapes: dict[str, torch.Size], init_scale: float, link: WeightLink):
        super().__init__()
        self.names = list(shapes)
        self._index = {name: i for i, name in enumerate(self.names)}
        fan_in = {name.rsplit(".", 1)[0]: shape[-1] for name, shape in shapes.items() if len(shape) == 2}
        self.locs = nn.ParameterList()
        self.raw_scales = nn.ParameterList()
        for name, shape in shapes.items():
            bound = 1 / math.sqrt(fan_in[name.rsplit(".", 1)[0]])
            self.locs.append(nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
            self.raw_scales.append(nn.Parameter(torch.full(shape, inverse_softplus(init_scale - MIN_SCALE))))
        self.link = link
        link.posterior = self

    def loc(self, name: str) -> torch.Tensor:
        return self.locs[self._index[name]]

    def scale(self, name: str) -> torch.Tensor:
        return F.softplus(self.raw_scales[self._index[name]]) + MIN_SCALE

    def forward(self) -> None:
        """Sample every weight site once, shared by enclosing vectorized plates (see the model docs)."""
        shape = plate_shape()
        for name in self.names:
            loc = self.loc(name)
            fn = dist.Normal(loc, self.scale(name)).to_event(loc.dim())
            own = fn.rsample()
            own = own.expand(shape + own.shape)
            with Preset({name: own}):
                value = pyro.sample(name, fn)
            if value is own:  # not replaced by a replayed or conditioned value
                self.link.record(name, value)


class BayesianVAEGuide(VAEGuide):
    """q(W) q(z|x): the weight posterior (global sites at scale B/N) and the amortized local guide."""

    def __init__(self, encoder: nn.Module, family: nn.Module, weights: WeightPosterior, dataset_size: int):
        super().__init__(encoder, family)
        self.weights, self.dataset_size = weights, dataset_size

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with poutine.scale(scale=x.shape[0] / self.dataset_size):
            self.weights()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x, y))


def bayesian_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> tuple[BayesianVAEModel, BayesianVAEGuide]:
    """The pair for ``model.weights = "bayesian"``: an MLP decoder with Bayesian weights."""
    m, g = cfg.model, cfg.guide
    if m.conditional or m.top_latent_dim or m.decoder.kind != "mlp":
        raise ConfigError("model.weights = 'bayesian' needs an MLP decoder, conditional = false and top_latent_dim = 0.")
    if m.local_reparam and cfg.estimator.name not in LOCAL_REPARAM_ESTIMATORS:
        raise ConfigError(
            f"model.local_reparam = true draws fresh weights for every data point and sample, which estimator "
            f"{cfg.estimator.name!r} cannot use: its bound needs the k samples of a data point to share one weight "
            f"draw. Set model.local_reparam = false, or use estimator {' or '.join(LOCAL_REPARAM_ESTIMATORS)}.")
    link = WeightLink()
    weight_prior = WeightPrior(m.weight_prior, m.weight_prior_scale, m.weight_prior_narrow, m.weight_prior_mix)
    decoder = BayesianMLP(m.latent_dim, list(m.decoder.hidden), data.x_dim * likelihood.outputs_per_pixel,
                          m.decoder.activation, weight_prior, link, m.local_reparam)
    n = data.train_x.shape[0]
    model = BayesianVAEModel(PRIORS[m.prior].from_config(cfg, data), decoder, likelihood, n, link)
    family = FAMILIES[g.family].from_config(cfg, data)
    encoder = make_network(g.encoder, data.x_dim, family.outputs, data.image_shape)
    guide = BayesianVAEGuide(encoder, family, WeightPosterior(decoder.site_shapes(), m.weight_init_scale, link), n)
    if m.weight_init:
        init_from_run(Path(m.weight_init), model, guide)
    return model, guide


@torch.no_grad()
def init_from_run(run_dir: Path, model: BayesianVAEModel, guide: BayesianVAEGuide) -> None:
    """Start from a trained point-estimate run (MAP init): its decoder weights become the posterior
    means, its encoder, posterior family, likelihood and prior parameters are copied as they are."""
    state = runs.load_checkpoint(Path(run_dir) / runs.CHECKPOINT)
    params = state["trainer"]["params"]
    if state.get("config", {}).get("model", {}).get("weights", "point") != "point":
        raise ConfigError(f"model.weight_init = {str(run_dir)!r} must be a point-estimate run (model.weights = 'point').")
    targets = {f"model$$${name}": guide.weights.loc(name) for name in model.decoder.site_shapes()}
    targets |= {f"model$$$likelihood.{n}": p for n, p in model.likelihood.named_parameters()}
    targets |= {f"model$$$prior.{n}": p for n, p in model.prior.named_parameters()}
    targets |= {f"guide$$${n}": p for n, p in guide.named_parameters() if not n.startswith("weights.")}
    bad = [n for n, p in targets.items() if n not in params or params[n].shape != p.shape]
    if bad:
        raise ConfigError(f"model.weight_init = {str(run_dir)!r} has a different architecture: no parameter of the "
                          f"right shape for {', '.join(bad[:4])}. Use a run with the same model and guide.")
    for name, p in targets.items():
        p.copy_(params[name].to(p.device))


@torch.no_grad()
def pointwise_log_likelihood(model: Callable, guide: Callable, x: torch.Tensor, *, draws: int, k: int,
                             chunk: int = 100) -> torch.Tensor:
    """``[draws, N]``: log p(x_n | W_s) by IWAE_k over z, for weights W_s drawn from the guide.

    Global (weight) sites are held at each draw in both model and guide, so every row is an
    ordinary IWAE bound of a fixed decoder. A pair without global sites gives ``draws`` rows
    that differ only by the importance samples. ``logmeanexp`` over rows estimates the
    posterior predictive log p(x_n | data); ArviZ reads the matrix as a log-likelihood group.
    """
    rows = []
    for w in weight_draws(guide, x, draws):
        m, g = poutine.condition(model, data=w), poutine.condition(guide, data=w)
        rows.append(torch.cat([_iwae(m, g, x[i:i + chunk], k) for i in range(0, x.shape[0], chunk)]))
    return torch.stack(rows)


def _iwae(model: Callable, guide: Callable, x: torch.Tensor, k: int, k_chunk: int = 500) -> torch.Tensor:
    total = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    for start in range(0, k, k_chunk):
        n = min(k_chunk, k - start)
        total = torch.logaddexp(total, iwae_bound(log_weights(model, guide, x, k=n)) + math.log(n))
    return total - math.log(k)


@torch.no_grad()
def decode_weight_draws(model: Callable, guide: Callable, z: torch.Tensor, x_template: torch.Tensor,
                        draws: int) -> torch.Tensor:
    """``[draws, n, D]``: the mean image E[x | z, W_s] of each z under ``draws`` guide weight draws."""
    x = batch_like(x_template, z.shape[0])
    return torch.stack([model_site(model, "x", z, x, fixed=w).mean for w in weight_draws(guide, x, draws)])


__all__ = ["BayesianVAEGuide", "WeightPosterior", "bayesian_pair", "decode_weight_draws", "init_from_run",
           "pointwise_log_likelihood"]
