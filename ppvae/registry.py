"""One registry for every part a config can name, with each part's parameters and traits.

A *part* is a class or function registered under a *kind* and a name::

    @registry.register("prior", "student_t")
    class StudentT(nn.Module):
        \"\"\"p(z) = prod_j StudentT(df, 0, 1): heavy tails.\"\"\"

        def __init__(self, latent_dim: int, *, df: Annotated[float, Param("> 0", "degrees of freedom")] = 3.0):
            ...

Its **parameters** are the keyword-only arguments of its constructor (or function), with their
defaults; ``Annotated[type, Param(...)]`` adds a description, a range check, valid choices or a
length. The positional arguments are what the code that builds the part passes (here the
latent size). A config then names the part as a table, ``prior = {name = "student_t", df = 5}``
(or just ``prior = "student_t"``), and ``model.prior.df=5`` overrides one parameter. Parameters
inherited through ``**kwargs`` from a base class (e.g. every estimator's KL weight) count too.

A part may define ``check_params(params, key)`` (a static or class method) for rules among its
own parameters; it raises :class:`~ppvae.errors.ConfigError`.

Its **traits** are keyword arguments of :func:`register`, from the vocabulary its kind declares
in :data:`KINDS` (say, a prior's ``support``); :mod:`ppvae.rules` checks parts against each other
from them, before any data is loaded.

A part is registered when its module is imported: :func:`discover` imports every module of a
part folder (``models/priors/``, ...), so a new part is one new file there. Parts of your own
outside the library are named in a config's ``plugins = ["my_parts.py"]``. Reading a config
needs only the parts' descriptions: :func:`describe` takes them from a catalog written at the
last import (``$PPVAE_CACHE/parts.json``, trusted while no source file of ppvae has changed), so
a config is checked, and a mistake in it reported, without importing torch; a described part's
module is imported when the part is first used.

The valid names, ``ppvae list``, ``ppvae list --keys`` and config validation all read this
registry; no list of names is written anywhere else.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import pkgutil
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ppvae.errors import ConfigError
from ppvae.paths import cache_root


@dataclass(frozen=True)
class Param:
    """What a parameter accepts, written as ``Annotated[type, Param(check, doc)]``.

    ``check`` is a range such as ``"> 0"``, ``">= 1"``, ``"!= 1"``, ``"in (0, 1)"`` (bounds
    excluded) or ``"in [0, 10]"`` (included); for a tuple it applies to every item, and
    ``length = (lo, hi)`` bounds the number of items (``hi = None``: no upper bound).
    """

    check: str | None = None
    doc: str = ""
    choices: tuple | None = None
    length: tuple[int, int | None] | None = None


@dataclass(frozen=True)
class Part:
    """Marks a config-section field that holds a chosen part: ``Annotated[Spec, Part("optimizer")]``."""

    kind: str


@dataclass(frozen=True)
class Field:
    """One parameter, resolved from a signature or a dataclass field."""

    name: str
    type: Any
    default: Any
    meta: Param | Part


@dataclass(frozen=True)
class Kind:
    """A kind of part: where a config names it, and the traits its parts may declare (with defaults)."""

    name: str
    where: str
    doc: str
    traits: Mapping[str, Any] = dataclasses.field(default_factory=dict)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("dataset", "data", "data sets: [data] name = ...",
         {"binary": False, "labels": False, "images": True}),  # True / False, or None: depends on the file
    Kind("likelihood", "model.likelihood", "likelihoods p(x|z)",
         {"binary_data": False, "closed_form_update": False}),
    Kind("prior", "model.prior", "priors p(z)", {"support": "real", "needs_guide": False}),  # reads q(z|x)
    Kind("family", "guide.family", "posterior families q(z|x)", {"support": "real"}),
    Kind("network", "model.decoder, guide.encoder, model.top", "encoder and decoder networks",
         {"flat_input": True}),  # reads a flat vector, so labels can be appended to it (CVAE)
    Kind("weights", "model.weights", "decoder weights", {"bayesian": False}),  # latent weights: a Bayesian decoder
    Kind("estimator", "estimator", "ELBO estimators: [estimator] name = ...",
         {"local_reparam": False}),  # its bound allows fresh weight noise per data point
    Kind("optimizer", "train.optimizer", "optimizers", {}),
    Kind("schedule", "train.schedule", "learning-rate schedules", {}),
    Kind("logger", "log.<name>", "trackers a run also writes to: [log.<name>] ...", {}),
    Kind("analysis", "eval.<name>", "analyses added to a run: [eval.<name>] ...",  # traits: what the run must offer
         {"real_valued": False, "unconditional": False, "conditional": False, "labels": False, "images": False}),
)}


@dataclass(frozen=True)
class Entry:
    """A registered part: imported (``loaded``), or known from the catalog of its package's last import
    (``loaded`` is None), in which case ``factory`` imports its module on first use."""

    kind: str
    name: str
    target: str  # module.qualname of the class or function
    module: str
    fields: tuple[Field, ...]
    traits: Mapping[str, Any]
    doc: str  # the first paragraph of the part's docstring, on one line
    has_check: bool = False  # the part defines check_params
    loaded: Callable | None = None

    @property
    def factory(self) -> Callable:
        if self.loaded is not None:
            return self.loaded
        real = _ENTRIES[self.kind].get(self.name)
        if real is None or real.loaded is None:  # importing the module registers the real entry in its place
            module = importlib.import_module(self.module)
            obj = functools.reduce(getattr, self.target[len(self.module) + 1:].split("."), module)
            _ENTRIES[self.kind][self.name] = real = dataclasses.replace(self, loaded=obj)
        return real.loaded

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, **traits: Any) -> Callable[[Callable], Callable]:
    """Register the decorated class or function as part ``name`` of ``kind``, with ``traits``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown part kind {kind!r}; kinds are {', '.join(KINDS)}.")
    unknown = set(traits) - set(KINDS[kind].traits)
    if unknown:
        raise ValueError(f"{kind} {name!r}: unknown trait(s) {sorted(unknown)}; {kind} traits are "
                         f"{', '.join(KINDS[kind].traits) or 'none'}.")

    def decorate(factory: Callable) -> Callable:
        old, target = _ENTRIES[kind].get(name), _qualname(factory)
        if old is not None and old.target != target:
            raise ValueError(f"{kind} {name!r} is registered twice: by {old.target} and {target}.")
        doc = inspect.getdoc(factory) or ""
        _ENTRIES[kind][name] = Entry(kind, name, target, factory.__module__, signature_fields(factory),
                                     dict(KINDS[kind].traits) | traits, " ".join(doc.split("\n\n")[0].split()),
                                     callable(getattr(factory, "check_params", None)), factory)
        return factory

    return decorate


def _qualname(obj: Callable) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def discover(package: str) -> None:
    """Import every module of ``package`` (a folder of parts): each registers what it defines."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


# ----------------------------------------------------------------------------- the catalog

CATALOG = "parts.json"  # in the cache folder: every bundled part's description, by the sources' fingerprint
SOURCES = ("ppvae", "ppvae.models", "ppvae.guides", "ppvae.experiments")  # the folders of ppvae's source files
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict,
          "tuple[int]": tuple[int, ...], "tuple[float]": tuple[float, ...], "tuple[str]": tuple[str, ...]}


@functools.cache
def fingerprint() -> str:
    """A digest of the path, size and mtime of every source file of ppvae, and of the interpreter's version:
    it changes when any file does (a new part file included)."""
    digest = hashlib.sha256(sys.version.encode())
    for package in SOURCES:
        for root in importlib.util.find_spec(package).submodule_search_locations or ():
            for path in sorted(Path(root).rglob("*")):
                if path.suffix in (".py", ".toml") and "results" not in path.parts:
                    stat = path.stat()
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def describe(modules: Sequence[str]) -> None:
    """Make the parts of ``modules`` (part folders and files of ppvae) known, without importing them when
    the catalog of their last import is current: describing parts is then free of torch and Pyro, and a
    part's module is imported when the part is used (:attr:`Entry.factory`). Otherwise import them and
    write the catalog."""
    path = cache_root() / CATALOG
    try:
        cached = json.loads(path.read_text())
        if cached["fingerprint"] == fingerprint() and cached["modules"] == list(modules):
            for row in cached["parts"]:
                _ENTRIES[row["kind"]].setdefault(row["name"], _entry_from_json(row))
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no catalog yet, or an unreadable one: import the parts and write it
    for module in modules:
        importlib.import_module(module)
    rows = [_entry_to_json(e) for kind in _ENTRIES.values() for e in kind.values() if e.module.startswith("ppvae.")]
    if None not in rows:  # every parameter's type has a JSON form
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": fingerprint(), "modules": list(modules), "parts": rows}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the next process the import


def _entry_to_json(e: Entry) -> dict | None:
    fields = []
    for f in e.fields:
        kind = next((k for k, t in _TYPES.items() if t == f.type), None)
        if kind is None or not isinstance(f.meta, Param):
            return None
        fields.append({"name": f.name, "type": kind, "default": plain(f.default), "check": f.meta.check,
                       "doc": f.meta.doc, "choices": f.meta.choices, "length": f.meta.length})
    return {"kind": e.kind, "name": e.name, "target": e.target, "module": e.module, "traits": dict(e.traits),
            "doc": e.doc, "has_check": e.has_check, "fields": fields}


def _entry_from_json(row: dict) -> Entry:
    tuple_of = lambda v: None if v is None else tuple(v)  # noqa: E731
    fields = tuple(Field(f["name"], _TYPES[f["type"]],
                         tuple(f["default"]) if f["type"].startswith("tuple") else f["default"],
                         Param(f["check"], f["doc"], tuple_of(f["choices"]), tuple_of(f["length"])))
                   for f in row["fields"])
    return Entry(row["kind"], row["name"], row["target"], row["module"], fields, row["traits"], row["doc"],
                 row["has_check"])


def names(kind: str) -> list[str]:
    return list(_ENTRIES[kind])


def entries(kind: str) -> list[Entry]:
    return list(_ENTRIES[kind].values())


def find(kind: str, name: str) -> Entry | None:
    """The part ``name`` of ``kind``, or None."""
    return _ENTRIES[kind].get(name)


def entry(kind: str, name: str, key: str | None = None) -> Entry:
    """The part ``name`` of ``kind``; an unknown name is a ConfigError naming ``key`` and the choices."""
    if name in _ENTRIES[kind]:
        return _ENTRIES[kind][name]
    known = names(kind)
    hint = difflib.get_close_matches(str(name), known, n=1)
    did = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"{key or KINDS[kind].where} = {name!r} is not one of {', '.join(map(repr, known))}.{did}")


def iter_traits(kind: str, trait: str, value: Any) -> Iterator[str]:
    """Names of the parts of ``kind`` whose ``trait`` equals ``value``."""
    return (e.name for e in entries(kind) if e.traits[trait] == value)


# ----------------------------------------------------------------------------- parameters


def signature_fields(factory: Callable) -> tuple[Field, ...]:
    """The keyword-only parameters of ``factory`` (a class: its ``__init__``), following ``**kwargs``
    into the base classes' ``__init__``."""
    fields: dict[str, Field] = {}
    targets = [c.__init__ for c in type.mro(factory) if "__init__" in vars(c)] if isinstance(factory, type) \
        else [factory]
    for fn in targets:
        if fn is object.__init__:
            break
        hints = typing.get_type_hints(fn, include_extras=True)
        params = inspect.signature(fn).parameters.values()
        for p in params:
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fields:
                if p.default is inspect.Parameter.empty:
                    raise TypeError(f"{_qualname(factory)}: keyword-only parameter {p.name!r} needs a default.")
                fields[p.name] = _field(p.name, hints.get(p.name, type(p.default)), p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return tuple(fields.values())


@functools.cache
def dataclass_fields(cls: type) -> tuple[Field, ...]:
    """The fields of a config-section dataclass, as parameters."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(_field(f.name, hints[f.name], default))
    return tuple(out)


def _field(name: str, hint: Any, default: Any) -> Field:
    meta = Param()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        meta = next((e for e in extras if isinstance(e, (Param, Part))), meta)
    return Field(name, hint, default, meta)


def check_value(key: str, value: Any, field: Field) -> Any:
    """``value`` for ``field`` after type coercion (ints to floats, lists to tuples) and checks."""
    typ = field.type
    if typing.get_origin(typ) is tuple:
        item = typing.get_args(typ)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {_toml(value)} has the wrong type: expected a list of "
                              f"{item.__name__}s, e.g. {_toml(field.default)}.")
        value = tuple(_scalar(f"{key}[{i}]", v, item, field.meta.check, key) for i, v in enumerate(value))
        lo, hi = field.meta.length or (0, None)
        if len(value) < lo or (hi is not None and len(value) > hi):
            span = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"{key} = {_toml(value)} has {len(value)} items; it takes {span}.")
    else:
        value = _scalar(key, value, typ, field.meta.check, key)
    choices = field.meta.choices
    if choices and value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        did = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key} = {_toml(value)} is not one of {', '.join(map(_toml, choices))}.{did}")
    return value


def _scalar(key: str, value: Any, typ: Any, check: str | None, whole: str) -> Any:
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typ is dict:
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, typ)
    if not ok:
        raise ConfigError(f"{key} = {_toml(value)} has the wrong type: expected {getattr(typ, '__name__', typ)}.")
    if typ is float and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is invalid: it must be a finite number.")
    if check:
        _check_range(key, value, check)
    return value


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


def _toml(value: Any) -> str:
    """A value as TOML writes it (true, not True; lists in brackets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value).replace("'", '"') if "'" in value and '"' not in value else f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


toml_value = _toml


# ----------------------------------------------------------------------------- chosen parts


@dataclass(frozen=True)
class Spec:
    """A chosen part with all its parameters: what ``prior = {name = "beta", a = 0.2}`` becomes.

    Parameters read as attributes (``spec.a``); :meth:`create` builds the part, passing the
    positional arguments its kind needs and the parameters as keywords.
    """

    kind: str
    name: str
    params: Mapping[str, Any]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key not in self.params:
            raise AttributeError(f"{self.kind} {self.name!r} has no parameter {key!r}")
        return self.params[key]

    @property
    def entry(self) -> Entry:
        return entry(self.kind, self.name)

    @property
    def traits(self) -> Mapping[str, Any]:
        return self.entry.traits

    def create(self, *args: Any, **kwargs: Any) -> Any:
        return self.entry.factory(*args, **kwargs, **self.params)

    def replace(self, **params: Any) -> "Spec":
        return Spec(self.kind, self.name, {**self.params, **params})

    def to_dict(self) -> dict:
        return {"name": self.name} | {k: plain(v) for k, v in self.params.items()}


def spec(kind: str, value: Any, key: str, defaults: Mapping[str, Any] | None = None) -> Spec:
    """Validate a part as a config gives it: a name, or a table with ``name`` and parameters.

    ``defaults`` are the section's own defaults for this place (e.g. a wider network for
    ``model.top``), used when ``value`` names the same part or gives no name.
    """
    if isinstance(value, Spec):
        value = value.to_dict()
    defaults = dict(defaults or {})
    name_key = key if isinstance(value, str) else f"{key}.name"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} = {_toml(value)} must name a {kind}, e.g. {key} = \"{names(kind)[0]}\" "
                          f"or {key} = {{name = \"{names(kind)[0]}\", ...}}.")
    value = dict(value)
    name = value.pop("name", defaults.get("name"))
    if not isinstance(name, str):
        raise ConfigError(f"{name_key} = {_toml(name)} must be the name of a {kind}: one of "
                          f"{', '.join(map(repr, names(kind)))}.")
    e = entry(kind, name, name_key)
    base = {k: v for k, v in defaults.items() if k != "name"} if defaults.get("name", name) == name else {}
    params = {}
    for f in e.fields:
        given = value.pop(f.name) if f.name in value else base.get(f.name, f.default)
        params[f.name] = check_value(f"{key}.{f.name}", given, f)  # defaults too: a TOML list becomes a tuple
    if value:
        bad = next(iter(value))
        valid = ", ".join(f.name for f in e.fields) or "none"
        hint = difflib.get_close_matches(bad, [f.name for f in e.fields], n=1)
        did = f" Did you mean {key}.{hint[0]}?" if hint else ""
        raise ConfigError(f"{key}.{bad} is not a parameter of {kind} {name!r}.{did} Its parameters: {valid}.")
    check_params = getattr(e.factory, "check_params", None) if e.has_check else None  # rules among its parameters
    if check_params is not None:
        check_params(params, key)
    return Spec(kind, name, params)


class Section:
    """Base of a config-section dataclass (``@dataclass(frozen=True)``): on construction every field is
    checked and normalized (ints to floats, lists to tuples, part names or tables to :class:`Spec`,
    tables to nested sections), so a section built from TOML and one built in Python are validated
    alike. ``key`` is where the section sits in a config (``"train"``), for messages."""

    key: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, raw: Any) -> "Section":
        """The section a TOML table describes; an unknown key is a ConfigError that suggests the nearest one."""
        if not isinstance(raw, dict):
            raise ConfigError(f"[{cls.key}] must be a table, got {_toml(raw)}.")
        valid = [f.name for f in dataclass_fields(cls)]
        for name in raw:
            if name not in valid:
                raise unknown_key(cls.key, name, valid)
        return cls(**raw)

    def __post_init__(self) -> None:
        for f in dataclass_fields(type(self)):
            key = f"{self.key}.{f.name}" if self.key else f.name
            value = getattr(self, f.name)
            if isinstance(f.meta, Part):
                value = spec(f.meta.kind, value, key, f.default.to_dict())
            elif isinstance(f.type, type) and issubclass(f.type, Section):
                value = value if isinstance(value, f.type) else f.type.from_dict(value)
            else:
                value = check_value(key, value, f)
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict:
        """The section as TOML would hold it: parts as tables, tuples as lists."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclass_fields(type(self))}


def plain(value: Any) -> Any:
    """A config value as TOML and JSON hold it: parts and sections as tables, tuples as lists."""
    if isinstance(value, (Spec, Section)):
        return value.to_dict()
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def unknown_key(prefix: str, name: str, valid: list[str]) -> ConfigError:
    """The error for a key a section does not have, with the nearest valid one."""
    full = f"{prefix}.{name}" if prefix else name
    hint = difflib.get_close_matches(name, valid, n=1)
    did = f" Did you mean {(prefix + '.' if prefix else '') + hint[0]!r}?" if hint else ""
    return ConfigError(f"Unknown config key {full!r}.{did} Valid keys here: {', '.join(valid)}.")


def any_part_has(kind: str, param: str) -> bool:
    """Whether some part of ``kind`` takes ``param`` (to tell a typo from a key of another part)."""
    return any(e.field(param) is not None for e in entries(kind))


__all__ = ["Param", "Part", "Section", "Field", "Kind", "KINDS", "Entry", "Spec", "register", "discover", "names",
           "entries", "entry", "find",
           "iter_traits", "signature_fields", "dataclass_fields", "check_value", "spec", "any_part_has", "toml_value",
           "plain", "unknown_key"]
