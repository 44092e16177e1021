"""The rules parts must satisfy together, checked from their traits in one place.

:func:`check` runs when a config is built (before any data is loaded); a rule whose trait is
``None`` (it depends on the file, as for an ``.npz`` data set) is checked again by
``check(cfg, data)`` once the data are loaded. A user's own pair (``model.pair``) builds its
model and guide itself, so only the rules about data and analyses apply to it.
"""

from __future__ import annotations

from typing import Any

from ppvae import registry
from ppvae.errors import ConfigError, DataError


def check(cfg: Any, data: Any = None) -> None:
    """Raise ConfigError (or DataError, for a rule the loaded ``data`` break) for parts that do not fit together."""
    m, g = cfg.model, cfg.guide
    bundled = not m.pair
    if bundled:
        _binary_data(cfg, data)
        _support(m.prior, g.family)
        _structure(cfg, data)
    for name, analysis in cfg.eval.analyses.items():
        _analysis(cfg, name, analysis.traits, bundled, data)
    if data is not None and cfg.eval.num_test > data.test_x.shape[0]:
        raise DataError(f"eval.num_test = {cfg.eval.num_test} is more than the {data.test_x.shape[0]} test points of "
                        f"{cfg.data.name!r}; give at most {data.test_x.shape[0]} (0: all of them).")


def _known(trait: bool | None, loaded: bool | None) -> bool | None:
    """What the loaded data show, or before loading the data set's trait (None: it depends on the file)."""
    return trait if loaded is None else loaded


def _binary_data(cfg: Any, data: Any) -> None:
    likelihood = cfg.model.likelihood
    if not likelihood.traits["binary_data"] or cfg.data.binarize != "none":
        return
    binary = _known(cfg.data.traits["binary"], None if data is None else data.binary)
    if binary is False:
        error = ConfigError if data is None else DataError
        raise error(f"model.likelihood = {likelihood.name!r} needs binary data, but {cfg.data.name!r} has grey levels. "
                    "Set data.binarize = 'dynamic' (or 'static' / 'threshold'), or choose a Gaussian likelihood.")


SUPPORT = {"real": "the real line", "unit_interval": "(0, 1), in logit coordinates"}


def _support(prior: registry.Spec, family: registry.Spec) -> None:
    """The guide must describe z in the prior's coordinates (e.g. logit codes for the Beta prior)."""
    p, q = prior.traits["support"], family.traits["support"]
    if p == q:
        return
    fits = " or ".join(map(repr, registry.iter_traits("family", "support", p)))
    raise ConfigError(f"model.prior = {prior.name!r} lives on {SUPPORT.get(p, p)}, but guide.family = {family.name!r} "
                      f"describes z on {SUPPORT.get(q, q)} (it pairs with model.prior = "
                      f"{' or '.join(map(repr, registry.iter_traits('prior', 'support', q)))}). "
                      f"Use guide.family = {fits}.")


def _structure(cfg: Any, data: Any) -> None:
    """What the three bundled pair structures (one layer, two layers, Bayesian decoder) can build."""
    m, g = cfg.model, cfg.guide
    flat = m.decoder.traits["flat_input"] and g.encoder.traits["flat_input"]
    if m.prior.traits["needs_guide"] and (m.conditional or m.top_latent_dim):
        raise ConfigError(f"model.prior = {m.prior.name!r} is built from the guide's q(z | x) at learned inputs, "
                          "without labels and for the one layer z: it needs conditional = false and top_latent_dim = 0.")
    images = _known(cfg.data.traits["images"], None if data is None else data.images)
    if not flat and images is False:
        error = ConfigError if data is None else DataError
        raise error(f"{cfg.data.name!r} holds rows of features, not images, which a convolutional network cannot "
                    "read; use model.decoder = 'mlp' and guide.encoder = 'mlp'.")
    if m.conditional:
        labels = _known(cfg.data.traits["labels"], None if data is None else data.train_y is not None)
        if labels is False:
            error = ConfigError if data is None else DataError
            raise error(f"model.conditional = true needs labels, but {cfg.data.name!r} has none; use a labelled "
                        "data set.")
        if not flat:
            raise ConfigError("model.conditional = true appends the label to the network inputs, which only networks "
                              "that read flat vectors can take; use model.decoder = 'mlp' and guide.encoder = 'mlp'.")
    if m.top_latent_dim:
        if (m.prior.name, g.family.name, m.conditional, m.weights.traits["bayesian"]) != ("normal", "normal", False,
                                                                                          False) or not flat:
            raise ConfigError("model.top_latent_dim > 0 (two stochastic layers of diagonal Normals) needs prior = "
                              "'normal', guide.family = 'normal', MLP networks, point weights and conditional = false.")
        if cfg.estimator.params.get("gradient") == "dreg":
            raise ConfigError("estimator.gradient = 'dreg' is biased with two stochastic layers: z feeds the guide's "
                              "q(z2 | z), and at k > 1 the doubly reparameterized estimator drops the score terms that "
                              "brings (Bauer & Mnih 2021; at k = 1 it is 'stl'). Use gradient = 'standard' with "
                              "model.top_latent_dim > 0.")
    if m.weights.traits["bayesian"]:
        if m.conditional or m.top_latent_dim or m.decoder.name != "mlp":
            raise ConfigError("model.weights = 'bayesian' needs an MLP decoder, conditional = false and "
                              "top_latent_dim = 0.")
        if m.likelihood.traits["closed_form_update"]:
            raise ConfigError(f"model.likelihood = {m.likelihood.name!r} sets sigma in closed form after each step, "
                              "which the Bayesian decoder's model does not run; use 'gaussian_learned' (sigma "
                              "learned by gradient).")
        if m.weights.local_reparam and not cfg.estimator.traits["local_reparam"]:
            allowed = " or ".join(registry.iter_traits("estimator", "local_reparam", True))
            raise ConfigError(
                f"model.weights.local_reparam = true draws fresh weights for every data point and sample, which "
                f"estimator {cfg.estimator.name!r} cannot use: its bound needs the k samples of a data point to share "
                f"one weight draw. Set model.weights.local_reparam = false, or use estimator {allowed}.")


def _analysis(cfg: Any, name: str, traits: dict, bundled: bool, data: Any) -> None:
    m = cfg.model
    if bundled and traits["real_valued"] and m.likelihood.traits["binary_data"]:
        raise ConfigError(f"eval.{name} compares densities on R^D: it needs a likelihood for real values, not "
                          f"{m.likelihood.name!r}.")
    if bundled and traits["unconditional"] and m.conditional:
        raise ConfigError(f"eval.{name} compares with unconditional baselines: it needs model.conditional = false.")
    if traits["conditional"] and not m.conditional:
        raise ConfigError(f"eval.{name} sums a conditional pair's label out: it needs model.conditional = true.")
    if traits["images"] and _known(cfg.data.traits["images"], None if data is None else data.images) is False:
        error = ConfigError if data is None else DataError
        raise error(f"eval.{name} draws or classifies images, but {cfg.data.name!r} holds rows of features; "
                    f"drop eval.{name}.")
    if traits["labels"]:
        labels = _known(cfg.data.traits["labels"], None if data is None else data.train_y is not None)
        if labels is False:
            error = ConfigError if data is None else DataError
            raise error(f"eval.{name} needs a labelled data set, but {cfg.data.name!r} has no labels.")


__all__ = ["check"]
