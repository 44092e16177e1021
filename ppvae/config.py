"""Experiment configuration: the sections, TOML loading, overrides and validation.

Every experiment reads the same way (``[data] [model] [guide] [estimator] [train] [eval]``).
A chosen part is a table with its name and its own parameters, ``prior = {name = "beta", a = 0.2}``
(or just ``prior = "beta"``); :mod:`ppvae.registry` knows the names and parameters of every
part, so this module lists none of them. Validation -- types, ranges, unknown keys, and the
cross-part rules of :mod:`ppvae.rules` -- happens before any data is loaded, so a typo costs
seconds, not a training run. Configs written by ppvae 0.1 (flat keys such as ``model.prior_a``)
are read through :mod:`ppvae.legacy`, with a one-line notice.

Overrides follow the TOML paths: ``train.epochs=5``, ``model.prior=beta``, ``model.prior.a=0.5``.
``key?=value`` sets a part's parameter only where the chosen part has it (a study scale that
shrinks the flow guide's context for the variants that use one); a key no part has is still an
error.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import difflib
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar

from ppvae import legacy, registry, rules
from ppvae.errors import ConfigError
from ppvae.paths import cache_root
from ppvae.registry import Param, Part, Section, Spec

# Every bundled part, described from the catalog of their last import without importing torch or Pyro (or,
# after a change to a source file, imported). The sections below name some of them as defaults.
registry.describe(("ppvae.infer.optimizers", "ppvae.infer.schedules", "ppvae.analyses", "ppvae.data",
                   "ppvae.guides", "ppvae.infer.estimators", "ppvae.loggers", "ppvae.models", "ppvae.nn"))

from ppvae.infer.settings import TrainSettings  # noqa: E402  (its defaults name described parts)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSection(Section):
    """``[model]``: the generative side of the bundled pair (or a pair of your own, ``pair``)."""

    key: ClassVar[str] = "model"

    latent_dim: Annotated[int, Param("> 0", "size of z")] = 2
    likelihood: Annotated[Spec, Part("likelihood")] = registry.spec("likelihood", "bernoulli", "model.likelihood")
    prior: Annotated[Spec, Part("prior")] = registry.spec("prior", "normal", "model.prior")
    decoder: Annotated[Spec, Part("network")] = registry.spec("network", "mlp", "model.decoder")
    weights: Annotated[Spec, Part("weights")] = registry.spec("weights", "point", "model.weights")
    conditional: Annotated[bool, Param(doc="CVAE: decoder and encoder also read the one-hot label (needs "
                                           "labels)")] = False
    top_latent_dim: Annotated[int, Param(">= 0", "a second stochastic layer z2 of this size (0: one layer)")] = 0
    top: Annotated[Spec, Part("network")] = registry.spec(
        "network", {"name": "mlp", "hidden": [100, 100], "activation": "tanh"}, "model.top")
    pair: Annotated[str, Param(doc="a pair of your own, 'file.py:make_pair' or 'module:make_pair'; replaces the "
                                   "[model] and [guide] parts")] = ""
    pair_params: Annotated[dict, Param(doc="keyword arguments of your pair's factory (checked against its "
                                           "keyword-only parameters)")] = field(default_factory=dict)


@dataclass(frozen=True)
class GuideSection(Section):
    """``[guide]``: the inference side of the bundled pair."""

    key: ClassVar[str] = "guide"

    family: Annotated[Spec, Part("family")] = registry.spec("family", "normal", "guide.family")
    encoder: Annotated[Spec, Part("network")] = registry.spec("network", "mlp", "guide.encoder")
    noise: Annotated[float, Param(">= 0", "denoising VAE: salt-and-pepper level on the encoder input in "
                                          "training")] = 0.0
    noise_schedule: Annotated[str, Param(doc="linear: the level falls to noise_end over the epochs",
                                         choices=("constant", "linear"))] = "constant"
    noise_end: Annotated[float, Param(">= 0", "final noise level of the linear schedule")] = 0.0


@dataclass(frozen=True)
class EvalSection(Section):
    """``[eval]``: the test evaluation, and the analyses added to it (``[eval.<analysis>]``)."""

    key: ClassVar[str] = "eval"

    k: Annotated[int, Param(">= 1", "importance samples for the test log-likelihood")] = 1000
    num_test: Annotated[int, Param(">= 0", "evaluate on the first N test points (0: all)")] = 0
    chunk_size: Annotated[int, Param(">= 0", "importance samples per chunk (0: automatic)")] = 0
    checkpoint: Annotated[str, Param(doc="evaluate the parameters of the best validation bound (best.pt, with "
                                         "data.validation) or of the last epoch", choices=("best", "last"))] = "best"
    max_hours: Annotated[float, Param("> 0", "refuse an evaluation that its first chunks estimate to take longer "
                                             "than this many hours")] = 24.0
    log_weights_mb: Annotated[float, Param(">= 0", "save the N x k log-weight matrix (log_weights.npz, float16) "
                                                   "when it needs at most this many MB (0: never; 'ppvae eval' "
                                                   "recomputes it exactly)")] = 64.0
    analyses: dict = field(default_factory=dict)  # analysis name -> Spec; in TOML each is its own eval.<name> table

    @classmethod
    def from_dict(cls, raw: Any) -> "EvalSection":
        return named_parts_from_dict(cls, raw, "analysis", "analyses")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "analyses", named_specs(self.key, "analysis", self.analyses))

    def to_dict(self) -> dict:
        return named_parts_to_dict(super().to_dict(), "analyses")


@dataclass(frozen=True)
class LogSection(Section):
    """``[log]``: trackers a run also writes to (``log.tensorboard = true``, ``[log.mlflow]``); the run folder stays
    the source of truth."""

    key: ClassVar[str] = "log"

    loggers: dict = field(default_factory=dict)  # logger name -> Spec; in TOML each is its own log.<name> table

    @classmethod
    def from_dict(cls, raw: Any) -> "LogSection":
        return named_parts_from_dict(cls, raw, "logger", "loggers")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "loggers", named_specs(self.key, "logger", self.loggers))

    def to_dict(self) -> dict:
        return named_parts_to_dict(super().to_dict(), "loggers")


NAMED_PARTS = {"analyses": "analysis", "loggers": "logger"}  # section fields that hold parts enabled by name


def named_parts_from_dict(cls: type[Section], raw: Any, kind: str, field_name: str) -> Section:
    """A section whose keys are its own settings or the names of parts of ``kind`` (``eval.theory = true``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{cls.key}] must be a table, got {registry.toml_value(raw)}.")
    static = [f.name for f in registry.dataclass_fields(cls) if f.name != field_name]
    names = registry.names(kind)
    kwargs, enabled = {}, {}
    for name, value in raw.items():
        if name in static:
            kwargs[name] = value
        elif name in names:
            enabled[name] = value
        else:
            raise registry.unknown_key(cls.key, name, static + names)
    return cls(**kwargs, **{field_name: enabled})


def named_specs(key: str, kind: str, values: dict) -> dict[str, Spec]:
    """``true`` (the part's defaults), ``false`` (off) or a table of its parameters, for each named part."""
    specs = {}
    for name, value in values.items():
        if value is False:
            continue
        table = {} if value is True else value.to_dict() if isinstance(value, Spec) else value
        if not isinstance(table, dict):
            raise ConfigError(f"{key}.{name} = {registry.toml_value(value)}: write true (its defaults), false, "
                              f"or a table of its parameters, e.g. [{key}.{name}].")
        specs[name] = registry.spec(kind, {**table, "name": name}, f"{key}.{name}")
    return specs


def named_parts_to_dict(out: dict, field_name: str) -> dict:
    parts = out.pop(field_name)
    return out | {name: {k: v for k, v in table.items() if k != "name"} for name, table in parts.items()}


@dataclass(frozen=True)
class Config(Section):
    """A whole experiment. ``plugins`` are files or modules imported first, so parts they register can be named."""

    key: ClassVar[str] = ""

    data: Annotated[Spec, Part("dataset")] = registry.spec("dataset", "digits", "data")
    model: ModelSection = ModelSection()
    guide: GuideSection = GuideSection()
    estimator: Annotated[Spec, Part("estimator")] = registry.spec("estimator", "trace", "estimator")
    train: TrainSettings = TrainSettings()
    eval: EvalSection = EvalSection()
    log: LogSection = LogSection()
    name: Annotated[str, Param(doc="experiment name (defaults to the file name)")] = ""
    description: Annotated[str, Param(doc="one line for ppvae list and report.md")] = ""
    plugins: Annotated[tuple[str, ...], Param(doc="files (my_parts.py) or modules that register parts of your "
                                                  "own, imported first")] = ()

    def __post_init__(self) -> None:
        load_plugins(self.plugins)
        super().__post_init__()
        rules.check(self)


# ----------------------------------------------------------------------------- building


def load_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin (a ``.py`` file or a module name) once, so the parts it registers can be named."""
    if isinstance(plugins, str) or not isinstance(plugins, (list, tuple)):
        raise ConfigError(f"plugins = {registry.toml_value(plugins)} must be a list of files or modules, "
                          'e.g. plugins = ["my_parts.py"].')
    for plugin in plugins:
        import_path(plugin, "plugins")


_RUN_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("run_folder", default=None)
TRUSTED = "trusted_code.json"  # in the cache folder: sha256 of every .py file this machine's user ran


@contextlib.contextmanager
def from_run_folder(run_dir: Path, trust: bool = False) -> Iterator[None]:
    """Build a config (and its pair) read from a run folder, which may have come from someone else: a ``.py``
    file it names (``model.pair``, ``plugins``) runs only if this machine's user ran that very file before
    (by naming it themselves) or ``trust`` (``--trust-pair``) says to."""
    token = _RUN_FOLDER.set(None if trust else Path(run_dir))
    try:
        yield
    finally:
        _RUN_FOLDER.reset(token)


def _trusted_hashes() -> set[str]:
    path = cache_root() / TRUSTED
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def _trust(path: Path, digest: str) -> None:
    """Remember that this user ran ``path`` (its content): a run folder naming it may run it again."""
    from ppvae import runs  # here: it imports torch, which reading a config does not need

    known = _trusted_hashes()
    if digest not in known:
        with contextlib.suppress(OSError):  # no record: the user is asked again next time
            (cache_root()).mkdir(parents=True, exist_ok=True)
            runs.write_json(cache_root() / TRUSTED, sorted(known | {digest}))


def import_path(target: str, key: str) -> Any:
    """The module a plugin or pair names: a ``.py`` file (imported once per resolved path) or a module name."""
    if not isinstance(target, str):
        raise ConfigError(f"{key} entry {registry.toml_value(target)} must be a string.")
    if not target.endswith(".py"):
        try:
            return importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"{key}: cannot import {target!r} ({e}).") from None
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{key} names {target!r}, which does not exist.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    folder = _RUN_FOLDER.get()
    if folder is not None and digest not in _trusted_hashes():
        raise ConfigError(f"The config of {folder} names {key} = {str(path)!r}, Python code that would run now, and "
                          "this user has not run that file before. Read it; to run it, pass --trust-pair.")
    _trust(path, digest)
    name = f"ppvae_user_{abs(hash(str(path)))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def build(raw: dict, overrides: Sequence[str] = ()) -> Config:
    """``raw`` (a TOML table, in the current or the 0.1 format) with ``overrides`` applied, validated.

    Overrides apply after the file is upgraded to the current format, and old-format overrides
    (``model.prior_a=0.5``) are upgraded after them, so the later one wins either way.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"A config must be a table, got {registry.toml_value(raw)}.")
    raw = copy.deepcopy(raw)
    load_plugins(raw.get("plugins", ()))
    raw, notices = legacy.upgrade(raw)
    hard = [o for o in overrides if not _is_soft(o)]
    raw = apply_overrides(raw, hard)
    for text in (o for o in overrides if _is_soft(o)):
        keys, value = parse_override(text.replace("?=", "=", 1))
        if _applies(raw, keys, text):
            raw = apply_overrides(raw, [text.replace("?=", "=", 1)])
    raw, late = legacy.upgrade(raw)
    for notice in dict.fromkeys(notices + late):
        log.warning(notice)
    return Config.from_dict(raw)


def from_dict(raw: dict) -> Config:
    """Build and validate a :class:`Config` from nested dictionaries (as parsed from TOML)."""
    return build(raw)


def to_dict(cfg: Config) -> dict:
    return cfg.to_dict()


# ----------------------------------------------------------------------------- files and overrides


def bundled_experiments() -> dict[str, Path]:
    """Names of the experiments shipped with ppvae, mapped to their TOML files."""
    root = resources.files("ppvae.experiments")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_experiment(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise ConfigError(f"{str(path)!r} is a folder, not a config file; give the path of a .toml file "
                              "(a run folder is continued with 'ppvae run --resume' and evaluated with 'ppvae eval').")
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


def read_toml(path: Path) -> dict:
    """A TOML file as a dict; an unreadable or invalid file is a ConfigError naming it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e}); save it as UTF-8.") from None
    except OSError as e:
        raise ConfigError(f"Cannot read {path} ({e.strerror}).") from None


def read_experiment(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """An experiment file as a dict, on top of the one its ``extends`` names (a bundled experiment, or a
    path relative to this file): tables merge key by key, any other value of this file replaces the
    other's. One protocol written once, its variants (``burda_iwae_k5`` on ``burda_vae``) a few lines each."""
    raw = read_toml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends = {parent!r} must name one experiment, e.g. extends = \"burda_vae\".")
    relative = Path(path).parent / parent
    parent_path = relative if relative.suffix == ".toml" and relative.is_file() else resolve_experiment(parent)
    if parent_path.resolve() in seen or parent_path.resolve() == Path(path).resolve():
        raise ConfigError(f"{path}: extends = {parent!r} leads back to itself; break the loop.")
    return _merge(read_experiment(parent_path, (*seen, Path(path).resolve())), raw)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _is_soft(text: str) -> bool:
    key = text.partition("=")[0]
    return key.endswith("?")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5). Values are read as TOML, else as strings."""
    key, sep, value = text.partition("=")
    key = key.removesuffix("?")
    if not sep or not key.strip():
        raise ConfigError(f"Override {text!r} is not of the form section.key=value (e.g. train.epochs=5).")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Set each ``key=value`` in ``raw``; a part named by a string becomes a table when a parameter is set."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if isinstance(child, str):  # model.prior = "beta", then model.prior.a = 0.5
                child = node[k] = {"name": child}
            if not isinstance(child, dict):
                raise ConfigError(f"Override {text!r}: {k!r} is not a section.")
            node = child
        node[keys[-1]] = value
    return raw


def _applies(raw: dict, keys: list[str], text: str) -> bool:
    """Whether soft override ``keys`` names a parameter of the part chosen in ``raw``. A key that no part
    of its kind has is an error (a typo), not a skip."""
    parent, param = keys[:-1], keys[-1]
    cfg = Config.from_dict(copy.deepcopy(raw))
    node: Any = cfg
    for k in parent:
        if isinstance(node, EvalSection) and k in registry.names("analysis"):
            if k not in node.analyses:
                if registry.entry("analysis", k).field(param) is None:
                    break
                return False
            node = node.analyses[k]
            continue
        node = getattr(node, k, None) if not isinstance(node, Spec) else None
        if node is None:
            break
    if isinstance(node, Spec):
        if node.entry.field(param) is not None:
            return True
        if registry.any_part_has(node.kind, param):
            return False
    raise ConfigError(f"Override {text!r}: no part there takes {param!r}; check the key with 'ppvae list --keys'.")


def load(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    """Load a bundled experiment or a TOML file, apply ``key=value`` overrides, validate."""
    path = resolve_experiment(name_or_path)
    raw = read_experiment(path)
    raw.setdefault("name", path.stem)
    return build(raw, overrides)


# ----------------------------------------------------------------------------- documentation


def keys(section: type[Section] = Config) -> list[tuple[str, str, str]]:
    """(key, default as TOML, description) for every config key, the parameters of every part included:
    what ``ppvae list --keys`` prints."""
    rows = []
    for f in registry.dataclass_fields(section):
        key = f"{section.key}.{f.name}" if section.key else f.name
        if f.name in NAMED_PARTS:
            kind = NAMED_PARTS[f.name]
            for e in registry.entries(kind):
                rows.append((f"{section.key}.{e.name}", "false", f"{kind} (true or a table enables it): {e.doc}"))
                rows += [(f"{section.key}.{e.name}.{p.name}", registry.toml_value(p.default), _describe(p))
                         for p in e.fields]
        elif isinstance(f.meta, Part):
            rows += _part_keys(key, f.meta.kind, f.default)
        elif isinstance(f.type, type) and issubclass(f.type, Section):
            rows += keys(f.type)
        else:
            rows.append((key, registry.toml_value(f.default), _describe(f)))
    return rows


def _part_keys(key: str, kind: str, default: Spec) -> list[tuple[str, str, str]]:
    name_key = f"{key}.name" if key in ("data", "estimator") else key
    rows = [(name_key, registry.toml_value(default.name), f"{registry.KINDS[kind].doc}: one of "
                                                          + "|".join(registry.names(kind)))]
    entries = registry.entries(kind)
    shared = {p.name for p in entries[0].fields if len(entries) > 1
              and all(q == p for e in entries[1:] for q in e.fields if q.name == p.name)
              and all(e.field(p.name) for e in entries)}  # the same parameter in every part: listed once
    for p in entries[0].fields:
        if p.name in shared:
            rows.append((f"{key}.{p.name}", registry.toml_value(default.params[p.name]), f"(every {kind}) "
                         + _describe(p)))
    for e in entries:
        for p in e.fields:
            if p.name not in shared:
                value = default.params[p.name] if e.name == default.name else p.default
                rows.append((f"{key}.{p.name}", registry.toml_value(value), f"({kind} {e.name!r}) {_describe(p)}"))
    return list(dict.fromkeys(rows))


def _describe(f: registry.Field) -> str:
    meta = f.meta
    bits = [meta.doc]
    if meta.choices:
        bits.append("one of " + "|".join(map(str, meta.choices)))
    if meta.check:
        bits.append(meta.check)
    return "; ".join(b for b in bits if b)


__all__ = ["Config", "ModelSection", "GuideSection", "EvalSection", "from_dict", "build", "to_dict", "load",
           "bundled_experiments", "resolve_experiment", "read_toml", "read_experiment", "apply_overrides",
           "parse_override", "keys", "load_plugins", "import_path", "from_run_folder"]
