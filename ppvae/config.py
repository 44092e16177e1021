"""Experiment configuration: typed sections, TOML loading, overrides and validation.

Every experiment reads the same way (``[data] [model] [guide] [estimator] [train] [eval]``).
Validation happens before any data is loaded or any step is taken, so a typo costs seconds,
not a training run. Each dataclass field may carry ``choices`` and ``check`` metadata that
the validator reads; the same metadata feeds ``ppvae list``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ppvae.errors import ConfigError


def _opt(default: Any, *, choices: tuple | None = None, check: str | None = None, doc: str = ""):
    """A config field with optional valid choices and a range check such as ``"> 0"``."""
    meta = {"choices": choices, "check": check, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "elu", "leaky_relu")


@dataclass
class NetworkConfig:
    """An encoder or decoder network."""

    kind: str = _opt("mlp", choices=("mlp", "cnn"), doc="network family")
    hidden: list = _opt([256], doc="MLP: hidden widths, 0 to 4 layers ([] is linear); CNN: channels per stride-2 layer, 1 to 4")
    activation: str = _opt("relu", choices=ACTIVATIONS)


@dataclass
class DataConfig:
    name: str = _opt("digits", choices=("digits", "mnist", "fashion_mnist", "frey_face", "binarized_mnist", "npz"))
    path: str = _opt("", doc="file for name = 'npz' (array 'x', optional 'y')")
    scale: str = _opt("auto", choices=("auto", "none", "255"),
                      doc="npz pixel scaling: 'auto' divides 0..255 integer images by 255, "
                          "'255' always divides, 'none' uses values as stored (must lie in [0, 1])")
    data_dir: str = _opt("", doc="folder holding the raw files; default $PPVAE_DATA or ~/.cache/ppvae")
    download: bool = _opt(True, doc="try to download missing files (needs network)")
    binarize: str = _opt("none", choices=("none", "threshold", "static", "dynamic"))
    test_fraction: float = _opt(0.2, check="in (0, 1)", doc="held-out share for sets without an official split")
    max_train: int = _opt(0, check=">= 0", doc="use only the first N training points (0: all)")
    max_test: int = _opt(0, check=">= 0", doc="use only the first N test points (0: all)")
    seed: int = _opt(0, check="in [0, 4294967295]", doc="seed of the split and of static binarization")


@dataclass
class ModelConfig:
    latent_dim: int = _opt(2, check="> 0")
    likelihood: str = _opt("bernoulli", choices=("bernoulli", "gaussian_fixed", "gaussian_learned", "gaussian_optimal",
                                                 "gaussian_perpixel", "gaussian_meanvar"))
    sigma: float = _opt(1.0, check="> 0", doc="fixed sigma, or initial sigma when learned or set in closed form")
    sigma_floor: float = _opt(1e-3, check="> 0", doc="gaussian_optimal/perpixel: lower limit of the closed-form sigma")
    stage_one_tol: float = _opt(0.01, check="> 0", doc="gaussian_perpixel: stage one ends when the epoch's sigma "
                                                       "changes by less than this (relative)")
    stage_one_max_epochs: int = _opt(20, check=">= 1",
                                     doc="gaussian_perpixel: stage one ends after this many epochs at the latest")
    prior: str = _opt("normal", choices=("normal", "beta", "mixture01", "mixture"))
    prior_a: float = _opt(0.2, check="> 0", doc="prior 'beta': Beta(a, b) per dimension (a, b < 1 put the mass near 0 and 1)")
    prior_b: float = _opt(0.2, check="> 0", doc="prior 'beta': the concentration b")
    prior_scale: float = _opt(0.1, check="> 0", doc="prior 'mixture01': sd of the components at 0 and 1")
    prior_components: int = _opt(10, check=">= 1", doc="prior 'mixture': number of learned Gaussian components")
    decoder: NetworkConfig = field(default_factory=NetworkConfig)
    pair: str = _opt("", doc="user pair factory 'file.py:function' or 'module:function'; replaces [model]/[guide] parts")
    conditional: bool = _opt(False, doc="CVAE: decoder and encoder also read the one-hot label (needs labels)")
    top_latent_dim: int = _opt(0, check=">= 0", doc="a second stochastic layer z2 of this size (0: one layer)")
    top: NetworkConfig = field(default_factory=lambda: NetworkConfig(hidden=[100, 100], activation="tanh"))
    weights: str = _opt("point", choices=("point", "bayesian"),
                        doc="decoder weights: point estimates, or a mean-field Normal posterior (full variational Bayes)")
    weight_prior: str = _opt("normal", choices=("normal", "scale_mixture"),
                             doc="bayesian: N(0, s^2) per weight, or pi N(0, s^2) + (1 - pi) N(0, s_narrow^2)")
    weight_prior_scale: float = _opt(1.0, check="> 0", doc="bayesian: prior sd s (the wide component of the mixture)")
    weight_prior_narrow: float = _opt(0.0025, check="> 0", doc="bayesian, scale_mixture: sd of the narrow component")
    weight_prior_mix: float = _opt(0.5, check="in (0, 1)", doc="bayesian, scale_mixture: weight pi of the wide component")
    weight_init: str = _opt("", doc="bayesian: a point-estimate run folder whose decoder (posterior means) and "
                                    "encoder start the run (MAP initialization)")
    weight_init_scale: float = _opt(0.01, check="> 0", doc="bayesian: initial posterior sd of every weight")
    local_reparam: bool = _opt(True, doc="bayesian: local reparameterization trick (estimators trace and meanfield only)")


@dataclass
class GuideConfig:
    family: str = _opt("normal", choices=("normal", "delta", "beta", "kumaraswamy", "lowrank", "flow"))
    rank: int = _opt(2, check=">= 1", doc="family 'lowrank': rank of the covariance factor")
    flow_layers: int = _opt(2, check=">= 1", doc="family 'flow': number of IAF layers")
    flow_hidden: list = _opt([], doc="family 'flow': hidden widths of each layer's MADE network ([]: 4 x latent_dim)")
    flow_context: int = _opt(32, check=">= 1", doc="family 'flow': size of the context h(x) the encoder passes to the layers")
    encoder: NetworkConfig = field(default_factory=NetworkConfig)
    noise: float = _opt(0.0, check=">= 0", doc="denoising VAE: salt-and-pepper level on the encoder input in training")
    noise_schedule: str = _opt("constant", choices=("constant", "linear"), doc="linear: decrease noise to noise_end")
    noise_end: float = _opt(0.0, check=">= 0", doc="final noise level of the linear schedule")


@dataclass
class EstimatorConfig:
    name: str = _opt("trace", choices=("trace", "meanfield", "renyi", "iwae"))
    num_particles: int = _opt(1, check=">= 1", doc="samples per data point (trace, meanfield, renyi)")
    k: int = _opt(5, check=">= 1", doc="importance samples per data point (iwae)")
    alpha: float = _opt(0.0, check="!= 1", doc="Renyi alpha (renyi)")
    gradient: str = _opt("standard", choices=("standard", "stl", "dreg"), doc="IWAE gradient estimator")
    beta: float = _opt(1.0, check=">= 0", doc="KL weight")
    beta_start: float = _opt(1.0, check=">= 0", doc="KL weight at step 0 when annealing")
    anneal_epochs: int = _opt(0, check=">= 0", doc="epochs of linear KL annealing from beta_start to beta")
    strict: bool = _opt(False, doc="meanfield: fail instead of falling back to a Monte Carlo KL")


@dataclass
class TrainConfig:
    optimizer: str = _opt("adam", choices=("adam", "adagrad", "sgd"))
    lr: float = _opt(1e-3, check="> 0")
    weight_decay: float = _opt(0.0, check=">= 0")
    batch_size: int = _opt(100, check=">= 1")
    epochs: int = _opt(10, check=">= 1")
    seed: int = _opt(0, check="in [0, 4294967295]", doc="seed of initialization, shuffling and sampling")
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"))


@dataclass
class EvalConfig:
    k: int = _opt(1000, check=">= 1", doc="importance samples for the test log-likelihood")
    num_test: int = _opt(0, check=">= 0", doc="evaluate on the first N test points (0: all)")
    chunk_size: int = _opt(0, check=">= 0", doc="importance samples per chunk (0: automatic)")
    log_weights_mb: float = _opt(64.0, check=">= 0",
                                 doc="save the N x k log-weight matrix (log_weights.npz, float16) when it needs at "
                                     "most this many MB (0: never; 'ppvae eval' recomputes it exactly)")
    gradient_study: bool = _opt(False, doc="after evaluation, measure the variance and SNR of every estimator's "
                                           "gradient at the trained parameters (gradient_variance.*)")
    gradient_ks: list = _opt([1, 5, 50], doc="gradient study: samples per data point k (particles for trace/meanfield)")
    gradient_repeats: int = _opt(100, check=">= 2", doc="gradient study: independent gradient estimates per setting")
    gradient_batch: int = _opt(100, check=">= 1", doc="gradient study: training points in the fixed batch")
    extra_k: list = _opt([], doc="further IWAE bounds on the same test points, reported as test_ll_k{K} (e.g. [20])")
    sample_quality: int = _opt(0, check=">= 0", doc="generated and test images for the sample-quality distances "
                                                    "fd_prior / fd_aggregate and KL(mixture || prior) (0: off)")
    aggregate_components: int = _opt(32, check=">= 1", doc="Gaussian mixture components fit to the aggregate posterior")
    theory: bool = _opt(False, doc="add test log-likelihoods of pPCA (closed-form ML and EM) and a GMM by EM fitted to "
                                   "the same data and, for a linear-Gaussian pair, the exact log p(x) = ELBO + "
                                   "KL(q || p(z|x)) (ppvae.theory)")
    gmm_components: int = _opt(10, check=">= 1", doc="theory: components of the GMM baseline (diagonal above 64 pixels)")
    decoder_figures: bool = _opt(False, doc="draw mu(z), ancestral samples from p(x|z) and mu(z) +/- 1, 2 sigma; "
                                            "with a 2-D latent also q(z|x) means and 1-sd ellipses by label")

    def __post_init__(self) -> None:
        if not self.gradient_ks or not all(type(v) is int and v >= 1 for v in self.gradient_ks):
            raise ConfigError(f"eval.gradient_ks = {self.gradient_ks!r} must be a list of positive integers, "
                              "e.g. [1, 5, 50].")
        if not all(type(v) is int and v >= 1 for v in self.extra_k):
            raise ConfigError(f"eval.extra_k = {self.extra_k!r} must be a list of positive integers, e.g. [20].")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = _opt("", doc="experiment name (defaults to the file name)")
    description: str = _opt("")


# ----------------------------------------------------------------------------- building


def _check_range(key: str, value: Any, check: str) -> None:
    op, _, bound = check.partition(" ")
    if op == "in":  # "in (lo, hi)" excludes the bounds, "in [lo, hi]" includes them
        lo, hi = (float(v) for v in bound.strip("()[]").split(","))
        ok = (lo <= value if bound[0] == "[" else lo < value) and (value <= hi if bound[-1] == "]" else value < hi)
    else:
        b = float(bound)
        ok = {">": value > b, ">=": value >= b, "!=": value != b}[op]
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be {check}.")


def _coerce(key: str, value: Any, typ: Any, meta: dict) -> Any:
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        ok = isinstance(value, bool)
    elif origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif origin is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, origin)
    if not ok:
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected {getattr(origin, '__name__', origin)}.")
    if origin is float and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is invalid: it must be a finite number.")
    if meta.get("choices") and value not in meta["choices"]:
        hint = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        did = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, meta['choices']))}.{did}")
    if meta.get("check"):
        _check_range(key, value, meta["check"])
    return value


def _build(cls: type, raw: dict, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = prefix + key
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            did = f" Did you mean {prefix + hint[0]!r}?" if hint else ""
            raise ConfigError(f"Unknown config key {full!r}.{did} Valid keys here: {', '.join(fields)}.")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, full + ".")
        else:
            kwargs[key] = _coerce(full, value, typ, dict(fields[key].metadata))
    return cls(**kwargs)


def _validate_network(key: str, net: NetworkConfig) -> None:
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in net.hidden):
        raise ConfigError(f"{key}.hidden = {net.hidden!r} must be a list of positive integers.")
    if net.kind == "mlp" and len(net.hidden) > 4:
        raise ConfigError(f"{key}.hidden has {len(net.hidden)} layers; an MLP takes 0 to 4 hidden layers.")
    if net.kind == "cnn" and not 1 <= len(net.hidden) <= 4:
        raise ConfigError(f"{key}.hidden = {net.hidden!r}: a CNN takes 1 to 4 channel counts, e.g. [32, 64].")


def from_dict(raw: dict) -> Config:
    """Build and validate a :class:`Config` from nested dictionaries (as parsed from TOML)."""
    cfg = _build(Config, raw, "")
    _validate_network("model.decoder", cfg.model.decoder)
    _validate_network("guide.encoder", cfg.guide.encoder)
    if cfg.eval.theory and not cfg.model.pair and (cfg.model.likelihood == "bernoulli" or cfg.model.conditional):
        raise ConfigError("eval.theory compares densities on R^D with unconditional EM baselines: it needs a Gaussian "
                          "likelihood (not 'bernoulli') and model.conditional = false.")
    if cfg.data.name == "npz" and not cfg.data.path:
        raise ConfigError("data.name = 'npz' needs data.path = 'file.npz' (an array 'x', optional 'y').")
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------- files and overrides


def bundled_experiments() -> dict[str, Path]:
    """Names of the experiments shipped with ppvae, mapped to their TOML files."""
    root = resources.files("ppvae.experiments")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_experiment(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist.")
        return path
    bundled = bundled_experiments()
    if name_or_path not in bundled:
        hint = difflib.get_close_matches(name_or_path, list(bundled), n=1)
        did = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"No bundled experiment named {name_or_path!r}.{did} Run 'ppvae list' to see them, or give a path to a .toml file."
        )
    return bundled[name_or_path]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5). Values are read as TOML, else as strings."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {text!r} is not of the form section.key=value (e.g. train.epochs=5).")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {text!r}: {k!r} is not a section.")
        node[keys[-1]] = value
    return raw


def load(name_or_path: str, overrides: list[str] = ()) -> Config:
    """Load a bundled experiment or a TOML file, apply ``key=value`` overrides, validate."""
    path = resolve_experiment(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    raw = apply_overrides(raw, list(overrides))
    raw.setdefault("name", path.stem)
    return from_dict(raw)


def field_docs(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, description) for every field, for ``ppvae list --keys`` and the README."""
    rows = []
    for f in dataclasses.fields(cls):
        typ = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(typ):
            rows += field_docs(typ, prefix + f.name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        bits = [f.metadata.get("doc", "")]
        if f.metadata.get("choices"):
            bits.append("one of " + "|".join(map(str, f.metadata["choices"])))
        if f.metadata.get("check"):
            bits.append(f.metadata["check"])
        rows.append((prefix + f.name, default, "; ".join(b for b in bits if b)))
    return rows


__all__ = [
    "Config", "DataConfig", "ModelConfig", "GuideConfig", "EstimatorConfig", "TrainConfig", "EvalConfig",
    "NetworkConfig", "from_dict", "to_dict", "load", "bundled_experiments", "resolve_experiment",
    "apply_overrides", "field_docs",
]
