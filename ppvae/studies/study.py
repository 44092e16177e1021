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

``ppvae run NAME --scale smoke`` writes one run folder per run inside the study folder
``runs/NAME-smoke/`` (each run's folder is named by its label, and ``study.json`` holds the plan),
then ``results.md`` and ``results.csv`` with one row per run (``--variants a,b`` runs only those
named variants and those they start from), ``curves.png`` (train and test bound against training
samples seen, every run overlaid), for a two-key grid ``heatmap_*.png`` of the final train loss
and test ELBO, and what each analysis enabled in its runs adds across them (``analyses.json``
and a section of ``results.md`` each). The same command again keeps finished runs and resumes
stopped ones. Where the runs execute (here one by one, or on Ray in parallel) is
:mod:`ppvae.studies.workers`; ``--shard i/n`` runs a slice and :func:`merge` joins the slices.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import shutil
from pathlib import Path

from ppvae import plots, registry, runs, tables
from ppvae.analyses import StudyRun
from ppvae.config import Config, build, read_experiment, resolve_experiment
from ppvae.errors import ConfigError, TrainingError
from ppvae.studies import workers

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
    config: str  # the label without the seed: the runs of one configuration share it


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


def plan(study: Study, scale: str, overrides: list[str] = (), variants: list[str] | None = None,
         seeds: list[int] | None = None) -> list[Planned]:
    """Every run of the study at ``scale``, validated before any run starts, in an order where each
    run comes after the runs it starts from.

    ``variants`` picks some of the study's named variants (all when None) and the variants they
    start from, so a long study can be split over processes without copying its file. ``seeds``
    replaces the study's training seeds (each seed of a configuration is one run)."""
    seeds = list(seeds or study.seeds)
    if study.scales and scale not in study.scales:
        raise ConfigError(f"Study {study.name!r} has no scale {scale!r}; choose one of {', '.join(study.scales)}.")
    chosen = _variants(study, variants)
    scale_overrides, vary = _scale(study, scale)
    keys = list(vary)
    out = []
    for values in itertools.product(*(vary[k] for k in keys)):
        grid = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
        for variant, extra in chosen.items():
            config = ", ".join([variant] * bool(variant) + grid)
            for seed in seeds:
                label = ", ".join([config] * bool(config) + [f"seed={seed}"] * (len(seeds) > 1))
                raw = copy.deepcopy(study.base)
                raw["name"] = f"{study.name}-{label}" if label else study.name
                full = [*extra, *grid, *scale_overrides, f"train.seed={seed}", *overrides]
                needs = list(dict.fromkeys(RUN_REF.findall(" ".join(full))))
                placeholder = [RUN_REF.sub(lambda m: f"<run folder of {m.group(1)}>", o) for o in full]
                out.append(Planned(label or study.name, build(raw, placeholder), variant, json.dumps(values), seed,
                                   full, needs, config or study.name))
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` as [0, 1, 2]: distinct seeds in the range ``train.seed`` takes."""
    parts = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() and int(t) < 2**32 for t in parts) or len(set(map(int, parts))) < len(parts):
        raise ConfigError(f"--seeds {text!r} must be distinct integers 0..4294967295 separated by commas, e.g. "
                          "--seeds 0,1,2.")
    return [int(t) for t in parts]


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
        variants: list[str] | None = None, pool: workers.Pool = workers.Pool(),
        shard: tuple[int, int] | None = None, seeds: list[int] | None = None) -> Path:
    """Run every run of a study (or of the variants named in ``variants``; with ``shard = (i, n)``
    the i-th of n slices of them) in ``out/NAME-SCALE``, and write the study's tables and figures.

    The same call again keeps the finished runs, resumes the stopped ones and runs the rest; a
    shard writes no table (:func:`merge` builds it from the shards' folders, or the same call
    without ``shard`` once every shard is done)."""
    study = read(name_or_path)
    if study is None:
        raise ConfigError(f"{name_or_path!r} has no [study] table; run it without --scale.")
    pool.check()
    planned = _ordered_by_needs(plan(study, scale, list(overrides), variants, seeds))
    study_dir = runs.make_dir(Path(out).resolve() / runs.safe_name(f"{study.name}-{scale}"))
    jobs = _jobs(study, planned, study_dir)
    spec = {"study": study.name, "scale": scale, "title": f"{study.name} ({scale} scale)", "columns": study.columns,
            "grid": list(_scale(study, scale)[1]),
            "runs": [{"label": j.label, "folder": j.folder.name, "config": p.config, "seed": p.seed}
                     for p, j in zip(planned, jobs)]}
    runs.write_json(study_dir / PLAN, spec)
    chosen = jobs if shard is None else workers.shard(jobs, *shard)
    for job in chosen:
        workers.check_folder(job)  # before any run starts

    def table_so_far(job: workers.Job) -> None:
        if shard is None:
            write_table(study_dir, _rows(study_dir, spec)[0], spec["columns"], spec["title"])

    failed = workers.execute(chosen, pool, on_done=table_so_far)
    if shard is None:
        tabulate(study_dir)
    if failed:
        lines = "".join(f"\n  {j.label}: {failed[j.folder]}" for j in chosen if j.folder in failed)
        raise TrainingError(f"{len(failed)} of the study's {len(chosen)} runs did not finish (their run folders say "
                            f"why; the results table holds the others):{lines}\nFix the cause and run the same "
                            "command again: finished runs are kept.")
    return study_dir


PLAN = "study.json"  # a study folder's plan: its runs' labels and folders, columns and grid


def _jobs(study: Study, planned: list[Planned], study_dir: Path) -> list[workers.Job]:
    """Each planned run with its fixed folder, and the folders of the runs it starts from filled in."""
    folders: dict[tuple, Path] = {}
    jobs = []
    for p in planned:
        name = runs.safe_name(p.cfg.name)
        while any(f.name == name for f in folders.values()):  # two labels that are one folder name
            name += "_"
        folder = folders[p.variant, p.point, p.seed] = study_dir / name
        needs = tuple(folders[n, p.point, p.seed] for n in p.needs)
        filled = tuple(RUN_REF.sub(lambda m: str(folders[m.group(1), p.point, p.seed]), o) for o in p.overrides)
        base = copy.deepcopy(study.base) | {"name": p.cfg.name}
        jobs.append(workers.Job(p.label, base, filled, folder, f"{p.point} seed={p.seed}", needs))
    return jobs


def _rows(study_dir: Path, spec: dict) -> tuple[list[dict], list[tuple[str, Config]]]:
    """The table's rows of the plan's finished runs, and their labels and configs."""
    rows, done = [], []
    for entry in spec["runs"]:
        folder = study_dir / entry["folder"]
        if runs.evaluated(folder):
            metrics = runs.read_json(folder / runs.METRICS)
            rows.append({"run": entry["label"], "folder": folder.name, "config": entry.get("config", entry["label"])}
                        | {c: metrics.get(c) for c in spec["columns"]})
            done.append((entry["label"], build(runs.read_json(folder / runs.CONFIG))))
    return rows, done


def tabulate(study_dir: Path) -> None:
    """The study's table, figures and analyses' sections from its finished run folders."""
    spec = runs.read_json(study_dir / PLAN)
    rows, done = _rows(study_dir, spec)
    if not rows:
        return
    study_figures(study_dir, done, rows, spec["grid"])
    aggregate(study_dir, done, rows, spec["columns"], spec["title"])


def merge(folders: list[Path], out: Path | None = None) -> Path:
    """One study folder from the folders its shards wrote (on one machine or copied from several):
    every finished run folder is copied into ``out`` (default the first folder), then the table
    and figures are built."""
    plans = []
    for folder in map(Path, folders):
        if not (folder / PLAN).is_file():
            raise ConfigError(f"{folder} is not a study folder (it has no {PLAN}); give the folders that "
                              "'ppvae run STUDY --shard i/n' wrote.")
        plans.append(runs.read_json(folder / PLAN))
    first = plans[0]
    for folder, spec in zip(folders, plans):
        if (spec["study"], spec["scale"], spec["runs"]) != (first["study"], first["scale"], first["runs"]):
            raise ConfigError(f"{folder} holds another study or scale ({spec['study']}, {spec['scale']}) or other runs "
                              f"than {folders[0]} ({first['study']}, {first['scale']}); merge the shards of one study.")
    target = runs.make_dir(Path(out or folders[0]).resolve())
    missing = []
    for entry in first["runs"]:
        dst = target / entry["folder"]
        src = next((Path(f) / entry["folder"] for f in folders if runs.evaluated(Path(f) / entry["folder"])), None)
        if src is None:
            missing.append(entry["label"])
        elif not runs.evaluated(dst):
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(runs.LOCK))
    if missing:
        raise ConfigError(f"{len(missing)} of the study's {len(first['runs'])} runs are not finished in any of the "
                          f"folders given: {', '.join(missing)}. Run the shards that hold them (the same command "
                          "resumes them), then merge again.")
    runs.write_json(target / PLAN, first)
    tabulate(target)
    return target


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
    text = f"# {title}\n\n" + tables.records(rows, header) + across_seeds(folder, rows, columns) + sections
    runs.write_bytes_atomic(folder / "results.md", text.encode())


def across_seeds(folder: Path, rows: list[dict], columns: list[str]) -> str:
    """Where a configuration ran with several seeds: each column's mean and standard deviation across them
    (results_seeds.csv and a section of results.md), the error bar a comparison of configurations rests on."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("config", row["run"]), []).append(row)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    header, cells, raw = ["configuration", "seeds", *columns], [], []
    for config, group in groups.items():
        line, numbers = [config, len(group)], [config, len(group)]
        for name in columns:
            mean, sd = tables.mean_sd(r.get(name) for r in group)
            line.append("-" if mean is None else f"{tables.cell(float(mean))} ± {tables.cell(sd)}")
            numbers += [mean, sd]
        cells.append(line)
        raw.append(numbers)
    csv_header = ["configuration", "seeds"] + [f"{c}_{stat}" for c in columns for stat in ("mean", "sd")]
    runs.write_bytes_atomic(folder / "results_seeds.csv", tables.csv_bytes(csv_header, raw))
    return ("\n## Across seeds\n\nMean ± standard deviation over the training seeds of each configuration "
            "(`results_seeds.csv`).\n\n" + tables.markdown(header, cells))


__all__ = ["Study", "Planned", "read", "plan", "run", "merge", "tabulate", "write_table", "study_figures", "aggregate",
           "across_seeds", "parse_seeds"]
