"""From a config to a model/guide pair: the bundled parts, or a user's own factory.

A user pair is named in the config as ``model.pair = "my_pair.py:make_pair"`` (a file
path) or ``"package.module:make_pair"``. The factory is called as
``make_pair(data, cfg)`` with the loaded :class:`~ppvae.data.Dataset` and the whole
:class:`~ppvae.config.Config`, and returns ``(model, guide)``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError, DataError
from ppvae.guides import FAMILIES, DiagonalNormal, VAEGuide
from ppvae.guides.bayesian import bayesian_pair
from ppvae.guides.denoising import DenoisingGuide
from ppvae.guides.hierarchical import TwoLayerGuide
from ppvae.models import LIKELIHOODS, PRIORS, StandardNormal, VAEModel
from ppvae.models.hierarchical import TwoLayerModel
from ppvae.nn import make_network

Pair = tuple[Callable, Callable]


def load_factory(spec: str) -> Callable[[Dataset, Config], Pair]:
    """Import ``file.py:function`` or ``module:function``."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise ConfigError(f"model.pair = {spec!r} must look like 'my_pair.py:make_pair' or 'package.module:make_pair'.")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"model.pair names {target!r}, which does not exist.")
        spec_ = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"model.pair: cannot import {target!r} ({e}).") from None
    if not hasattr(module, func):
        raise ConfigError(f"model.pair: {target!r} has no function {func!r}.")
    return getattr(module, func)


def build_pair(cfg: Config, data: Dataset) -> Pair:
    """The model and guide a config describes, sized for ``data``."""
    if cfg.model.pair:
        return load_factory(cfg.model.pair)(data, cfg)
    m, g = cfg.model, cfg.guide
    likelihood = LIKELIHOODS[m.likelihood].from_config(cfg, data)
    if likelihood.needs_binary_data and not data.binary:
        raise DataError(
            f"model.likelihood = {m.likelihood!r} needs binary data, but {data.name!r} has grey levels. "
            "Set data.binarize = 'dynamic' (or 'static' / 'threshold'), or choose a Gaussian likelihood."
        )
    builder = bayesian_pair if m.weights == "bayesian" else _two_layer_pair if m.top_latent_dim else _one_layer_pair
    model, guide = builder(cfg, data, likelihood)
    if hasattr(likelihood, "after_step") and not hasattr(model, "after_step"):
        raise ConfigError(f"model.likelihood = {m.likelihood!r} sets sigma in closed form after each step, which "
                          f"{type(model).__name__} does not run; use 'gaussian_learned' (sigma learned by gradient).")
    if g.noise > 0:
        end = g.noise_end if g.noise_schedule == "linear" else g.noise
        guide = DenoisingGuide(guide, g.noise, end, cfg.train.epochs)
    return model, guide


def _one_layer_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> Pair:
    m, g = cfg.model, cfg.guide
    classes = _conditioning_classes(cfg, data)
    out_dim = data.x_dim * likelihood.outputs_per_pixel
    decoder = make_network(m.decoder, m.latent_dim + classes, out_dim, data.image_shape, "decoder")
    prior = PRIORS[m.prior].from_config(cfg, data)
    if getattr(prior, "decoder_input", None) is not None:  # e.g. the Beta prior's latent is logit(code)
        decoder = nn.Sequential(prior.decoder_input, decoder)
    model = VAEModel(prior, decoder, likelihood, num_classes=classes)
    family = FAMILIES[g.family].from_config(cfg, data)
    encoder = make_network(g.encoder, data.x_dim + classes, family.outputs, data.image_shape)
    return model, VAEGuide(encoder, family, num_classes=classes)


def _conditioning_classes(cfg: Config, data: Dataset) -> int:
    """Number of label classes a conditional pair appends to its network inputs (0: unconditional)."""
    if not cfg.model.conditional:
        return 0
    if data.train_y is None or not data.num_classes:
        raise DataError(f"model.conditional = true needs labels, but {data.name!r} has none; use a labelled dataset.")
    if "cnn" in (cfg.model.decoder.kind, cfg.guide.encoder.kind):
        raise ConfigError("model.conditional = true works with MLP networks only; set the network kinds to 'mlp'.")
    return data.num_classes


def _two_layer_pair(cfg: Config, data: Dataset, likelihood: nn.Module) -> Pair:
    """Burda et al.'s two stochastic layers: Normal layers, ``model.top`` networks between z1 and z2."""
    m, g = cfg.model, cfg.guide
    if (m.prior, g.family, m.conditional) != ("normal", "normal", False) or "cnn" in (m.decoder.kind, g.encoder.kind):
        raise ConfigError("model.top_latent_dim > 0 (two stochastic layers) needs prior = 'normal', guide.family = "
                          "'normal', MLP networks and conditional = false.")
    d1, d2 = m.latent_dim, m.top_latent_dim
    bottom, top = DiagonalNormal(d1), DiagonalNormal(d2)
    model = TwoLayerModel(StandardNormal(d2), make_network(m.top, d2, bottom.outputs), bottom,
                          make_network(m.decoder, d1, data.x_dim * likelihood.outputs_per_pixel), likelihood)
    guide = TwoLayerGuide(make_network(g.encoder, data.x_dim, bottom.outputs), DiagonalNormal(d1),
                          make_network(m.top, d1, top.outputs), top)
    return model, guide
