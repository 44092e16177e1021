"""Multi-run studies: one TOML file, a ``[study]`` table, a grid of runs and a results table.

A study file is an ordinary experiment (its sections are the shared base config) plus::

    [study]
    vary = { "model.latent_dim" = [3, 5, 10] }          # a grid: every combination is a run
    variants = { vae = [], ae = ["guide.family=delta"] } # named override sets, crossed with the grid
    seeds = [0, 1]                                       # each seed is a separate run (a chain)
    columns = ["test_nll", "test_elbo", "test_kl"]       # metrics.json keys for the table
    [study.scales]
    smoke = { set = ["data.name=digits", "train.epochs=2"], vary = { "model.latent_dim" = [3] } }
    full = ["data.name=mnist", "train.epochs=100"]       # a plain list is just overrides

A variant may start from another variant's run: ``{run:NAME}`` in one of its override values
is replaced by the run folder of variant NAME at the same grid point and seed, and NAME runs
first (``bayesian_map = ["model.weights={name = 'bayesian', init = '{run:normal}'}"]``: a
Bayesian decoder initialized from the point-estimate run, MAP initialization).

``ppvae run NAME --scale smoke`` writes one run folder per run inside a study folder, then
``results.md`` and ``results.csv`` with one row per run (``--variants a,b`` runs only those
named variants and those they start from), ``curves.png`` (train and test bound against training
samples seen, every run overlaid), for a two-key grid ``heatmap_*.png`` of the final train loss
and test ELBO, and what each analysis enabled in its runs adds across them (``analyses.json``
and a section of ``results.md`` each).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
from pathlib import Path

from ppvae import plots, registry, runs, tables
from ppvae.analyses import StudyRun
from ppvae.config import Config, build, read_experiment, resolve_experiment
from ppvae.errors import ConfigError
from ppvae.studies import run as one_run

DEFAULT_COLUMNS = ["test_nll", "test_elbo", "test_kl", "test_recon_mse", "seconds_per_epoch"]
RUN_REF = re.compile(r"\{run:([^}]+)\}")  # {run:VARIANT}: that variant's run folder


def _strings(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _values(v: object) -> bool:
    return isinstance(v, list) and bool(v)


def _scale_spec(v: object) -> bool:
    return _strings(v) or (isinstance(v, dict) and set(v) <= {"set", "vary"} and _strings(v.get("set", []))
                           and isinstance(v.get("vary", {}), dict) and all(map(_values, v.get("vary", {}).values())))


# [study]'s keys and their shapes, checked when the file is read: a mistyped file is one line, not a TypeError later.
# A table's shape is that of each of its entries.
STUDY_TABLES = {
    "vary": (_values, "a list of the values to try, e.g. [2, 5, 10]"),
    "variants": (_strings, 'a list of overrides, e.g. ["model.latent_dim=10"]'),
    "scales": (_scale_spec,
               'a list of overrides, e.g. ["train.epochs=40"], or { set = [...], vary = { key = [...] } }'),
}
STUDY_LISTS = {
    "seeds": (lambda v: isinstance(v, list) and bool(v) and all(type(s) is int for s in v),
              "a list of integer seeds, e.g. seeds = [0, 1, 2]"),
    "columns": (_strings, 'a list of metric names, e.g. columns = ["test_nll", "test_elbo"]'),
}


STUDY_KEYS = sorted({*STUDY_TABLES, *STUDY_LISTS})


def _check_shapes(spec: dict, path: Path) -> None:
    unknown = set(spec) - set(STUDY_KEYS)
    if unknown:
        raise ConfigError(f"Unknown key(s) in [study]: {sorted(unknown)}. Valid keys: {STUDY_KEYS}.")
    for key, value in spec.items():
        if key in STUDY_LISTS:
            ok, shape = STUDY_LISTS[key]
            if not ok(value):
                raise ConfigError(f"{path}: [study] {key} = {registry.toml_value(value)} must be {shape}.")
            continue
        ok, shape = STUDY_TABLES[key]
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [study] {key} = {registry.toml_value(value)} must be a table whose entries "
                              f"are each {shape}.")
        for name, entry in value.items():
            if not ok(entry):
                raise ConfigError(f"{path}: [study.{key}] {name} = {registry.toml_value(entry)} must be {shape}.")


@dataclasses.dataclass
class Study:
    name: str
    base: dict
    vary: dict[str, list]
    variants: dict[str, list[str]]
    seeds: list[int]
    columns: list[str]
    scales: dict[str, list[str]]


@dataclasses.dataclass
class Planned:
    """One run of a study: its label, validated config, variant, grid point and seed, and the variants it starts from."""

    label: str
    cfg: Config
    variant: str
    point: str  # the grid values, as JSON (hashable whatever they are)
    seed: int
    overrides: list[str]  # before {run:...} references are filled in
    needs: list[str]


def read(name_or_path: str) -> Study | None:
    """The study in a bundled experiment or TOML file, or None for a single-run experiment."""
    path = resolve_experiment(name_or_path)
    raw = read_experiment(path)
    spec = raw.pop("study", None)
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: [study] must be a table.")
    _check_shapes(spec, path)
    raw.setdefault("name", path.stem)
    return Study(raw["name"], raw, dict(spec.get("vary", {})), dict(spec.get("variants", {"": []})),
                 list(spec.get("seeds", [raw.get("train", {}).get("seed", 0)])),
                 list(spec.get("columns", DEFAULT_COLUMNS)), dict(spec.get("scales", {})))


def plan(study: Study, scale: str, overrides: list[str] = (), variants: list[str] | None = None) -> list[Planned]:
    """Every run of the study at ``scale``, validated before any run starts, in an order where each
    run comes after the runs it starts from.

    ``variants`` picks some of the study's named variants (all when None) and the variants they
    start from, so a long study can be split over processes without copying its file."""
    if study.scales and scale not in study.scales:
        raise ConfigError(f"Study {study.name!r} has no scale {scale!r}; choose one of {', '.join(study.scales)}.")
    chosen = _variants(study, variants)
    scale_overrides, vary = _scale(study, scale)
    keys = list(vary)
    out = []
    for values in itertools.product(*(vary[k] for k in keys)):
        grid = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
        for variant, extra in chosen.items():
            for seed in study.seeds:
                label = ", ".join([variant] * bool(variant) + grid + [f"seed={seed}"] * (len(study.seeds) > 1))
                raw = copy.deepcopy(study.base)
                raw["name"] = f"{study.name}-{label}" if label else study.name
                full = [*extra, *grid, *scale_overrides, f"train.seed={seed}", *overrides]
                needs = list(dict.fromkeys(RUN_REF.findall(" ".join(full))))
                placeholder = [RUN_REF.sub(lambda m: f"<run folder of {m.group(1)}>", o) for o in full]
                out.append(Planned(label or study.name, build(raw, placeholder), variant, json.dumps(values), seed,
                                   full, needs))
    return out


def _variants(study: Study, names: list[str] | None) -> dict[str, list[str]]:
    """The named variants to run, in the study's order, with every variant one of them starts from."""
    for name, extra in study.variants.items():
        for ref in RUN_REF.findall(" ".join(extra)):
            if ref not in study.variants:
                raise ConfigError(f"Variant {name!r} of study {study.name!r} starts from {{run:{ref}}}, which is not "
                                  f"one of its variants ({', '.join(study.variants)}).")
    if names is None:
        return study.variants
    unknown = [n for n in names if n not in study.variants]
    if unknown:
        raise ConfigError(f"Study {study.name!r} has no variant(s) {unknown}; choose from "
                          f"{', '.join(v for v in study.variants if v) or '(none: it has no [study.variants])'}.")
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += RUN_REF.findall(" ".join(study.variants[name]))
    return {v: extra for v, extra in study.variants.items() if v in wanted}


def _scale(study: Study, scale: str) -> tuple[list[str], dict[str, list]]:
    """A scale's overrides and the grid it runs (its own ``vary`` replaces the study's)."""
    spec = study.scales.get(scale, [])
    if isinstance(spec, list):
        return spec, study.vary
    unknown = set(spec) - {"set", "vary"}
    if unknown:
        raise ConfigError(f"[study.scales.{scale}] takes 'set' and 'vary', not {sorted(unknown)}.")
    return list(spec.get("set", [])), study.vary | dict(spec.get("vary", {}))


def _ordered_by_needs(planned: list[Planned]) -> list[Planned]:
    """The runs in the study's order, each moved after the runs it starts from."""
    done, out, pending = set(), [], list(planned)
    while pending:
        ready = [p for p in pending if all((n, p.point, p.seed) in done for n in p.needs)]
        if not ready:
            raise ConfigError("The study's variants start from each other in a circle: "
                              + ", ".join(f"{p.variant} <- {p.needs}" for p in pending) + ".")
        for p in ready:
            out.append(p)
            done.add((p.variant, p.point, p.seed))
            pending.remove(p)
    return out


def run(name_or_path: str, scale: str = "smoke", overrides: list[str] = (), out: Path | str = "runs",
        variants: list[str] | None = None) -> Path:
    """Run every run of a study (or of the variants named in ``variants``) and write the study's tables and figures."""
    study = read(name_or_path)
    if study is None:
        raise ConfigError(f"{name_or_path!r} has no [study] table; run it without --scale.")
    planned = _ordered_by_needs(plan(study, scale, list(overrides), variants))
    study_dir = runs.new_run_dir(out, f"{study.name}-{scale}")
    folders: dict[tuple, Path] = {}
    rows, done = [], []
    for p in planned:
        cfg = p.cfg
        if p.needs:
            filled = [RUN_REF.sub(lambda m: str(folders[m.group(1), p.point, p.seed]), o) for o in p.overrides]
            raw = copy.deepcopy(study.base)
            raw["name"] = cfg.name
            cfg = build(raw, filled)
        run_dir = one_run.run(cfg, out=study_dir)
        folders[p.variant, p.point, p.seed] = run_dir
        metrics = runs.read_json(run_dir / runs.METRICS)
        rows.append({"run": p.label, "folder": run_dir.name} | {c: metrics.get(c) for c in study.columns})
        done.append((p.label, cfg))
        write_table(study_dir, rows, study.columns, f"{study.name} ({scale} scale)")
    study_figures(study_dir, done, rows, list(_scale(study, scale)[1]))
    aggregate(study_dir, done, rows, study.columns, f"{study.name} ({scale} scale)")
    return study_dir


def aggregate(folder: Path, done: list[tuple[str, Config]], rows: list[dict], columns: list[str], title: str) -> None:
    """What each analysis enabled in the study's runs adds across them: figures in the study folder,
    its metrics in ``analyses.json`` and its section in ``results.md``."""
    enabled = dict.fromkeys(name for _, cfg in done for name in cfg.eval.analyses)
    sections, summary = [], {}
    for name in enabled:
        study_runs = [StudyRun(label, folder / row["folder"]) for (label, cfg), row in zip(done, rows)
                      if name in cfg.eval.analyses]
        cls = registry.entry("analysis", name).factory
        result = cls.aggregate(folder, study_runs)
        if result is None:
            continue
        summary[name] = result.metrics
        figures = "".join(f"\n![{p.stem}]({p.name})\n" for p in result.figures)
        sections.append(f"\n## {cls.title or name}\n\n{result.report}{figures}")
    if summary:
        runs.write_json(folder / "analyses.json", summary)
    write_table(folder, rows, columns, title, "".join(sections))


def study_figures(folder: Path, done: list[tuple[str, Config]], rows: list[dict], keys: list[str]) -> None:
    """Bound curves of every run against training samples seen; a heatmap for two-key grids."""
    series = {}
    for (label, cfg), row in zip(done, rows):
        hist = runs.read_jsonl(folder / row["folder"] / runs.EPOCHS)
        seen = [h["step"] * cfg.train.batch_size for h in hist]
        series[f"{label} (train {_objective(cfg)})"] = (seen, [-h["train_loss"] for h in hist])
        series[f"{label} (test ELBO)"] = (seen, [h["test_elbo"] for h in hist])
    plots.curves(series, folder / "curves.png", xlabel="training samples seen", title="lower bound per example")
    if len(keys) == 2:
        metrics = [runs.read_json(folder / r["folder"] / runs.METRICS) for r in rows]
        values = {key: _ordered({_get(cfg, key) for _, cfg in done}) for key in keys}
        for metric, sign in (("final_train_loss", -1.0), ("test_elbo", 1.0)):
            grid = [[float("nan")] * len(values[keys[1]]) for _ in values[keys[0]]]
            for (_, cfg), m in zip(done, metrics):
                i, j = values[keys[0]].index(_get(cfg, keys[0])), values[keys[1]].index(_get(cfg, keys[1]))
                grid[i][j] = sign * m[metric]
            plots.heatmap(grid, [str(v) for v in values[keys[0]]], [str(v) for v in values[keys[1]]],
                          folder / f"heatmap_{metric}.png", ylabel=keys[0], xlabel=keys[1],
                          title=("train bound" if sign < 0 else "test ELBO") + " per example")


def _objective(cfg: Config) -> str:
    """What a run's train curve shows: its training objective, which is not always the ELBO."""
    e = cfg.estimator
    name = {"iwae": lambda: f"IWAE k={e.k}",
            "renyi": lambda: f"Renyi a={e.alpha:g}, {e.num_particles} samples"}.get(e.name, lambda: "ELBO")()
    return name + (f", beta={e.beta:g}" if e.beta != 1.0 else "")


def _ordered(values: set) -> list:
    """Grid values in their natural order (20 before 100), or as text when they do not compare."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _get(cfg: Config, key: str):
    """A config value by dotted key, e.g. 'train.batch_size' or 'model.prior.a' (parts read as their
    tables, lists as tuples, so values can be sorted)."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, registry.Spec):
        return json.dumps(value.to_dict(), sort_keys=True)
    return tuple(value) if isinstance(value, list) else value


def write_table(folder: Path, rows: list[dict], columns: list[str], title: str, sections: str = "") -> None:
    """results.csv and results.md: one row per run (and the analyses' sections below the table)."""
    header = ["run", *columns, "folder"]
    runs.write_bytes_atomic(folder / "results.csv", tables.csv_bytes(header, [[r.get(h) for h in header] for r in rows]))
    text = f"# {title}\n\n" + tables.records(rows, header) + sections
    runs.write_bytes_atomic(folder / "results.md", text.encode())


__all__ = ["Study", "Planned", "read", "plan", "run", "write_table", "study_figures", "aggregate"]
