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

from ppvae.config import Config
from ppvae.data import Dataset
from ppvae.errors import ConfigError, DataError
from ppvae.guides import FAMILIES, VAEGuide
from ppvae.models import LIKELIHOODS, PRIORS, VAEModel
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
    decoder = make_network(m.decoder, m.latent_dim, data.x_dim * likelihood.outputs_per_pixel, data.image_shape, "decoder")
    model = VAEModel(PRIORS[m.prior].from_config(cfg, data), decoder, likelihood)
    family = FAMILIES[g.family].from_config(cfg, data)
    guide = VAEGuide(make_network(g.encoder, data.x_dim, family.outputs, data.image_shape), family)
    return model, guide
