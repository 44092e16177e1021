"""A VAE whose decoder weights are latent variables: full variational Bayes (Kingma & Welling, appendix F).

The decoder is a :class:`pyro.nn.PyroModule` whose weights and biases are ``PyroSample``
attributes with a Gaussian or a scale-mixture prior. The model draws them once per call,
*outside* the ``data`` plate, so they are global latent sites; the guide
(:mod:`ppvae.guides.bayesian`) holds a mean-field Normal posterior over them.

Scaling under minibatching
    The full-data objective is ``sum_n ELBO_n(W) + log p(W) - log q(W)``. A batch of B of the
    N training points carries its local terms at scale 1 and the weight sites at scale B/N
    (model and guide alike), so the objectives of the batches of an epoch add up to the
    full-data objective in expectation, and the trainer's per-example loss (``loss / B``) is
    ``mean_batch ELBO_n - KL(q(W) || p(W)) / N``: the same units, and the same learning rates,
    as the point-estimate VAE. (Scaling the local terms by N/B instead gives the same optimum
    and gradients N/B times larger.)

One weight draw per call
    The guide draws each weight once per call and shares it across vectorized particles
    (the IWAE estimator's k samples, Trace_ELBO's vectorized particles). An importance-weighted
    bound over the local z with the weights' log p(W) - log q(W) outside the logsumexp is a
    lower bound on log p(X) only when the k samples of a data point see the same weights.

Local reparameterization (Kingma, Salimans & Welling 2015)
    With a Normal posterior, ``h W^T + b`` given h is Normal with mean ``h mu_W^T + mu_b`` and
    variance ``h^2 sigma_W^2 + sigma_b^2``; sampling that directly, per data point and layer,
    gives the same expected log-likelihood as one weight draw per data point, with much less
    gradient noise. It applies to the ELBO estimators (trace, meanfield), where the weights'
    KL is a separate term. The model applies it when the weights it is handed are exactly
    the guide's latest draw; anything else (conditioned or replayed weights) is used as given.

The model run on its own
    When no guide draw is replayed into it (figures: reconstructions, samples), the model
    decodes with the posterior-mean weights, so its pictures show the trained decoder rather
    than weights drawn from the prior.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import get_plates
from torch import nn

from ppvae.importance import DATA_PLATE, is_latent
from ppvae.nn import ACTIVATIONS


def plate_shape() -> torch.Size:
    """Batch shape the enclosing vectorized plates give a site sampled here (e.g. ``[k, 1]`` for particles)."""
    frames = [f for f in get_plates() if f.vectorized and f.dim is not None]
    shape = [1] * max((-f.dim for f in frames), default=0)
    for f in frames:
        shape[f.dim] = f.size
    return torch.Size(shape)


class Preset(Messenger):
    """Give latent sites a value unless an outer handler (replay, condition) supplies one.

    Being the innermost handler, it sets the value first; outer replay or condition
    handlers overwrite it, and Pyro does not draw a site that already has a value.
    """

    def __init__(self, values: dict[str, torch.Tensor]):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is None and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


class WeightLink:
    """What the Bayesian decoder reads from its weight guide, without owning its parameters.

    The guide records each weight draw here; the model asks for the Normal moments of a
    weight tensor (local reparameterization, only if it *is* the guide's latest draw) and
    for the posterior means (to decode when it runs on its own).
    """

    def __init__(self) -> None:
        self.posterior: nn.Module | None = None  # set by the guide's WeightPosterior
        self._draws: dict[str, torch.Tensor] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        self._draws[name] = value

    def moments(self, name: str, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.posterior is None or self._draws.get(name) is not value:
            return None
        return self.posterior.loc(name), self.posterior.scale(name)

    def means(self) -> dict[str, torch.Tensor]:
        """Posterior means of every weight site, broadcast over the enclosing vectorized plates."""
        if self.posterior is None:
            return {}
        shape = plate_shape()
        return {name: self.posterior.loc(name).expand(shape + self.posterior.loc(name).shape)
                for name in self.posterior.names}


class WeightPrior(nn.Module):
    """p(w) per weight: N(0, s^2), or the scale mixture pi N(0, s^2) + (1 - pi) N(0, s_narrow^2)
    of Blundell et al. (2015), whose narrow component lets many weights sit near zero."""

    def __init__(self, kind: str = "normal", scale: float = 1.0, narrow: float = 0.0025, mix: float = 0.5):
        super().__init__()
        self.kind = kind
        scales = [scale] if kind == "normal" else [scale, narrow]
        self.register_buffer("scales", torch.tensor(scales))
        self.register_buffer("logits", torch.tensor([mix, 1 - mix]).log())

    def forward(self, shape: tuple[int, ...]) -> dist.Distribution:
        if self.kind == "normal":
            base = dist.Normal(torch.zeros_like(self.scales[0]), self.scales[0])
        else:
            base = dist.MixtureSameFamily(dist.Categorical(logits=self.logits),
                                          dist.Normal(torch.zeros_like(self.scales), self.scales))
        return base.expand(torch.Size(shape)).to_event(len(shape))


class BayesianLinear(PyroModule):
    """A linear layer whose weight ``[out, in]`` and bias ``[out]`` are ``PyroSample`` latent sites."""

    def __init__(self, in_features: int, out_features: int, prior: WeightPrior, link: WeightLink,
                 local_reparam: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.prior, self.link, self.local_reparam = prior, link, local_reparam
        self.weight = PyroSample(lambda self: self.prior((self.out_features, self.in_features)))
        self.bias = PyroSample(lambda self: self.prior((self.out_features,)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if self.local_reparam:
            qw = self.link.moments(self._pyro_get_fullname("weight"), w)
            qb = self.link.moments(self._pyro_get_fullname("bias"), b)
            if qw is not None and qb is not None:
                mean = F.linear(h, qw[0], qb[0])
                var = F.linear(h * h, qw[1] ** 2, qb[1] ** 2)
                return mean + var.sqrt() * torch.randn_like(mean)
        if w.dim() == 2:
            return F.linear(h, w, b)
        # one draw per vectorized particle: w is [*particles, 1, out, in] (the 1 is the data plate)
        return torch.matmul(h, w.squeeze(-3).transpose(-1, -2)) + b


class BayesianMLP(PyroModule[nn.Sequential]):
    """The MLP of :class:`ppvae.nn.MLP` with Bayesian linear layers (same layer indices, so
    a point-estimate decoder's ``decoder.{i}.weight`` maps onto site ``decoder.{i}.weight``)."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, activation: str, prior: WeightPrior,
                 link: WeightLink, local_reparam: bool = True):
        layers: list[nn.Module] = []
        for width in [*hidden, out_dim]:
            layers.append(BayesianLinear(in_dim, width, prior, link, local_reparam))
            layers.append(ACTIVATIONS[activation]())
            in_dim = width
        super().__init__(*layers[:-1])

    def site_shapes(self, prefix: str = "decoder") -> dict[str, torch.Size]:
        """Weight site name -> shape, as the model names them when the decoder is attribute ``prefix``."""
        shapes = {}
        for i, layer in enumerate(self):
            if isinstance(layer, BayesianLinear):
                shapes[f"{prefix}.{i}.weight"] = torch.Size((layer.out_features, layer.in_features))
                shapes[f"{prefix}.{i}.bias"] = torch.Size((layer.out_features,))
        return shapes

    def draw(self) -> None:
        """Sample every weight once for this call; later reads in the same call reuse the draw."""
        for layer in self:
            if isinstance(layer, BayesianLinear):
                _ = layer.weight, layer.bias


class BayesianVAEModel(PyroModule):
    """p(W) p(z) p(x | z, W): the VAE model with a Bayesian decoder (see the module docstring).

    ``dataset_size`` is N, the number of training points, which scales the weight sites by B/N.
    """

    def __init__(self, prior: nn.Module, decoder: BayesianMLP, likelihood: nn.Module, dataset_size: int,
                 link: WeightLink):
        super().__init__()
        self.prior, self.decoder, self.likelihood = prior, decoder, likelihood
        self.dataset_size, self.link = dataset_size, link

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def metrics(self) -> dict[str, float]:
        """The likelihood's sigma when it has one; the weight posterior's mean sd and KL per training example."""
        sigma = getattr(self.likelihood, "sigma", None)
        sigma = None if sigma is None else torch.as_tensor(sigma).detach()
        out = {} if sigma is None or sigma.numel() != 1 else {"likelihood_sigma": float(sigma)}
        return out | weight_posterior_summary(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with poutine.scale(scale=x.shape[0] / self.dataset_size), Preset(self.link.means()):
            self.decoder.draw()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            code = self.prior.decoder_input(z) if getattr(self.prior, "decoder_input", None) is not None else z
            pyro.sample("x", self.likelihood(self.decoder(code)), obs=x)


@torch.no_grad()
def weight_kl(model: BayesianVAEModel, draws: int = 16) -> torch.Tensor:
    """KL(q(W) || p(W)) over all decoder weights: closed form for the Normal prior, else Monte Carlo."""
    posterior = model.link.posterior
    total = torch.zeros(())
    for name, shape in model.decoder.site_shapes().items():
        q = dist.Normal(posterior.loc(name), posterior.scale(name)).to_event(len(shape))
        p = model.decoder[0].prior(tuple(shape))
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            w = q.sample((draws,))
            kl = (q.log_prob(w) - p.log_prob(w)).mean(0)
        total = total + kl.cpu()
    return total


def weight_posterior_summary(model: BayesianVAEModel) -> dict[str, float]:
    """Mean posterior sd of the decoder weights and KL(q(W) || p(W)) per training example."""
    posterior = model.link.posterior
    if posterior is None:
        return {}
    with torch.no_grad():
        scales = torch.cat([posterior.scale(name).flatten() for name in posterior.names])
    return {"weight_sd_mean": float(scales.mean()), "weight_kl_per_example": float(weight_kl(model)) / model.dataset_size}


@torch.no_grad()
def weight_draws(guide: Callable, x: torch.Tensor, draws: int) -> list[dict[str, torch.Tensor]]:
    """``draws`` independent draws of every global (weight) site from the guide.

    The values are copies: the guide's link remembers its latest draw by identity, and a model
    handed that very tensor would replace it by local-reparameterization noise instead of
    decoding with the fixed weights.
    """
    out = []
    for _ in range(draws):
        tr = poutine.trace(guide).get_trace(x[:1])
        out.append({name: site["value"].clone() for name, site in tr.nodes.items()
                    if is_latent(site) and not any(f.name == DATA_PLATE for f in site["cond_indep_stack"])})
    return out


__all__ = ["BayesianLinear", "BayesianMLP", "BayesianVAEModel", "Preset", "WeightLink", "WeightPrior",
           "plate_shape", "weight_draws", "weight_kl", "weight_posterior_summary"]
