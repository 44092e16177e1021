"""From a config to a model/guide pair: the bundled structures built from registered parts, or a user's factory.

The bundled pair has three structures: one stochastic layer (:class:`~ppvae.models.VAEModel` /
:class:`~ppvae.guides.VAEGuide`), two (``model.top_latent_dim > 0``, Burda et al.), and a
Bayesian decoder (``model.weights = "bayesian"``). :mod:`ppvae.rules` has already checked that
the chosen parts fit the structure.

A user pair is named as ``model.pair = "my_pair.py:make_pair"`` (a file) or
``"package.module:make_pair"``. The factory is called as ``make_pair(data, cfg, **pair_params)``
with the loaded :class:`~ppvae.data.Dataset` and the config; its keyword-only parameters are
what ``[model.pair_params]`` may set (checked like any part's). The ``cfg`` it receives has
``model.pair`` cleared, so ``build_pair(cfg, data)`` inside the factory builds the bundled pair
(to swap one part of it) instead of calling the factory again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ppvae import registry, rules, runs
from ppvae.config import Config, import_path
from ppvae.config import build as build_config
from ppvae.data import Dataset
from ppvae.errors import ConfigError
from ppvae.guides.bayesian import BayesianVAEGuide, WeightPosterior
from ppvae.guides.denoising import DenoisingGuide
from ppvae.guides.families.normal import DiagonalNormal
from ppvae.guides.hierarchical import TwoLayerGuide
from ppvae.guides.vae import VAEGuide
from ppvae.models.bayesian import BayesianVAEModel
from ppvae.models.hierarchical import TwoLayerModel
from ppvae.models.priors.normal import StandardNormal
from ppvae.models.vae import VAEModel
from ppvae.nn import make_network

Pair = tuple[Callable, Callable]


def load_factory(spec: str) -> Callable[..., Pair]:
    """The function ``file.py:function`` or ``module:function`` names."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise ConfigError(f"model.pair = {spec!r} must look like 'my_pair.py:make_pair' or 'package.module:make_pair'.")
    module = import_path(target, "model.pair")
    if not hasattr(module, func):
        raise ConfigError(f"model.pair: {target!r} has no function {func!r}.")
    return getattr(module, func)


def pair_params(cfg: Config) -> dict:
    """``model.pair_params`` checked against the factory's keyword-only parameters (when it declares any)."""
    factory = load_factory(cfg.model.pair)
    fields = registry.signature_fields(factory)
    given = dict(cfg.model.pair_params)
    if not fields:
        return given
    unknown = [k for k in given if all(f.name != k for f in fields)]
    if unknown:
        raise registry.unknown_key("model.pair_params", unknown[0], [f.name for f in fields])
    return {f.name: registry.check_value(f"model.pair_params.{f.name}", given[f.name], f) if f.name in given
            else f.default for f in fields}


def build_pair(cfg: Config, data: Dataset) -> Pair:
    """The model and guide a config describes, sized for ``data`` (which must fit the config's parts: the rules
    whose traits depend on the loaded data are checked here)."""
    rules.check(cfg, data)
    m, g = cfg.model, cfg.guide
    if m.pair:
        bundled = dataclasses.replace(cfg, model=dataclasses.replace(m, pair="", pair_params={}))
        return load_factory(m.pair)(data, bundled, **pair_params(cfg))
    likelihood = m.likelihood.create()
    if m.weights.traits["bayesian"]:
        model, guide = _bayesian_pair(cfg, data, likelihood)
    elif m.top_latent_dim:
        model, guide = _two_layer_pair(cfg, data, likelihood)
    else:
        model, guide = _one_layer_pair(cfg, data, likelihood)
    if g.noise > 0:
        end = g.noise_end if g.noise_schedule == "linear" else g.noise
        guide = DenoisingGuide(guide, g.noise, end, cfg.train.epochs)
    return model, guide


def _decoder_with_input(prior: nn.Module, decoder: nn.Module) -> nn.Module:
    """A prior whose latent is not what the decoder reads (the Beta prior's logit codes) puts its map in front."""
    if getattr(prior, "decoder_input", None) is not None:
        return nn.Sequential(prior.decoder_input, decoder)
    return decoder


def _one_layer_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> Pair:
    m, g = cfg.model, cfg.guide
    classes = data.num_classes if m.conditional else 0
    out_dim = data.x_dim * likelihood.outputs_per_pixel
    decoder = m.weights.create().decoder(m.decoder, m.latent_dim + classes, out_dim, data.image_shape)
    prior = m.prior.create(m.latent_dim)
    model = VAEModel(prior, _decoder_with_input(prior, decoder), likelihood, num_classes=classes)
    family = g.family.create(m.latent_dim)
    encoder = make_network(g.encoder, data.x_dim + classes, family.outputs, data.image_shape)
    guide = VAEGuide(encoder, family, num_classes=classes)
    _attach(prior, guide, data)
    return model, guide


def _attach(prior: nn.Module, guide: VAEGuide, data: Dataset) -> None:
    """A prior built from the guide's posterior (``attach_guide``: the VampPrior) gets it once the guide exists."""
    if hasattr(prior, "attach_guide"):
        prior.attach_guide(guide.posterior, data.x_dim)


def _two_layer_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> Pair:
    """Burda et al.'s two stochastic layers: Normal layers, ``model.top`` networks between z1 and z2."""
    m, g = cfg.model, cfg.guide
    d1, d2 = m.latent_dim, m.top_latent_dim
    bottom, q1, q2 = DiagonalNormal(d1), g.family.create(d1), g.family.create(d2)  # p(z | z2), q(z | x), q(z2 | z)
    model = TwoLayerModel(StandardNormal(d2), make_network(m.top, d2, bottom.outputs), bottom,
                          make_network(m.decoder, d1, data.x_dim * likelihood.outputs_per_pixel), likelihood)
    guide = TwoLayerGuide(make_network(g.encoder, data.x_dim, q1.outputs), q1, make_network(m.top, d1, q2.outputs), q2)
    return model, guide


def _bayesian_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> Pair:
    """A Bayesian MLP decoder (global weight sites, B/N-scaled) and the weight posterior in the guide."""
    m, g = cfg.model, cfg.guide
    weights = m.weights.create()
    decoder = weights.decoder(m.decoder, m.latent_dim, data.x_dim * likelihood.outputs_per_pixel, data.image_shape)
    n = data.num_train
    kl_scale = n / cfg.train.batch_size if weights.kl_per_batch else 1.0  # the ablation: scale 1 on a full batch
    prior = m.prior.create(m.latent_dim)
    model = BayesianVAEModel(prior, decoder, likelihood, n, kl_scale)
    family = g.family.create(m.latent_dim)
    encoder = make_network(g.encoder, data.x_dim, family.outputs, data.image_shape)
    posterior = WeightPosterior(decoder.site_shapes(), weights.init_scale, decoder.link)
    guide = BayesianVAEGuide(encoder, family, posterior, n, kl_scale)
    _attach(prior, guide, data)
    if weights.init:
        init_from_run(Path(weights.init), model, guide)
    return model, guide


@torch.no_grad()
def init_from_run(run_dir: Path, model: BayesianVAEModel, guide: BayesianVAEGuide) -> None:
    """Start from a trained point-estimate run (MAP init): its decoder weights become the posterior
    means, its encoder, posterior family, likelihood and prior parameters are copied as they are."""
    state = runs.load_checkpoint(Path(run_dir) / runs.CHECKPOINT)
    params = state["trainer"]["params"]
    if build_config(state.get("config", {})).model.weights.traits["bayesian"]:  # in whichever format it was written
        raise ConfigError(f"model.weights.init = {str(run_dir)!r} must be a point-estimate run "
                          "(model.weights = 'point').")
    targets = {f"model$$${name}": guide.weights.loc(name) for name in model.decoder.site_shapes()}
    targets |= {f"model$$$likelihood.{n}": p for n, p in model.likelihood.named_parameters()}
    targets |= {f"model$$$prior.{n}": p for n, p in model.prior.named_parameters()}
    targets |= {f"guide$$${n}": p for n, p in guide.named_parameters() if not n.startswith("weights.")}
    bad = [n for n, p in targets.items() if n not in params or params[n].shape != p.shape]
    if bad:
        raise ConfigError(f"model.weights.init = {str(run_dir)!r} has a different architecture: no parameter of the "
                          f"right shape for {', '.join(bad[:4])}. Use a run with the same model and guide.")
    for name, p in targets.items():
        p.copy_(params[name].to(p.device))


__all__ = ["build_pair", "load_factory", "pair_params", "init_from_run"]
