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

``ppvae run NAME --scale smoke`` writes one run folder per variant inside a study folder,
then ``results.md`` and ``results.csv`` with one row per run (``--variants a,b`` runs only those
named variants, e.g. to split a long study over two processes), ``curves.png`` (train and
test bound against training samples seen, every run overlaid) and, for a two-key grid,
``heatmap.png`` of the final train loss and test ELBO.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
import tomllib
from pathlib import Path

from ppvae import runs
from ppvae.config import Config, apply_overrides, from_dict, resolve_experiment
from ppvae.errors import ConfigError

STUDY_KEYS = {"vary", "variants", "seeds", "columns", "scales"}
DEFAULT_COLUMNS = ["test_nll", "test_elbo", "test_kl", "test_recon_mse", "seconds_per_epoch"]


@dataclasses.dataclass
class Study:
    name: str
    base: dict
    vary: dict[str, list]
    variants: dict[str, list[str]]
    seeds: list[int]
    columns: list[str]
    scales: dict[str, list[str]]


def read(name_or_path: str) -> Study | None:
    """The study in a bundled experiment or TOML file, or None for a single-run experiment."""
    path = resolve_experiment(name_or_path)
    raw = tomllib.loads(path.read_text())
    spec = raw.pop("study", None)
    if spec is None:
        return None
    unknown = set(spec) - STUDY_KEYS
    if unknown:
        raise ConfigError(f"Unknown key(s) in [study]: {sorted(unknown)}. Valid keys: {sorted(STUDY_KEYS)}.")
    raw.setdefault("name", path.stem)
    return Study(raw["name"], raw, dict(spec.get("vary", {})), dict(spec.get("variants", {"": []})),
                 list(spec.get("seeds", [raw.get("train", {}).get("seed", 0)])),
                 list(spec.get("columns", DEFAULT_COLUMNS)), dict(spec.get("scales", {})))


def configs(study: Study, scale: str, overrides: list[str] = (),
            variants: list[str] | None = None) -> list[tuple[str, Config]]:
    """(label, validated config) for every run; all are validated before any run starts.

    ``variants`` picks some of the study's named variants (all when None), so a long study can be
    split over processes or cores without copying its file."""
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
                raw = apply_overrides(raw, [*extra, *grid, *scale_overrides, f"train.seed={seed}",
                                            *overrides])
                out.append((label or study.name, from_dict(raw)))
    return out


def _variants(study: Study, names: list[str] | None) -> dict[str, list[str]]:
    """The named variants to run, in the study's order."""
    if names is None:
        return study.variants
    unknown = [n for n in names if n not in study.variants]
    if unknown:
        raise ConfigError(f"Study {study.name!r} has no variant(s) {unknown}; choose from "
                          f"{', '.join(v for v in study.variants if v) or '(none: it has no [study.variants])'}.")
    return {v: extra for v, extra in study.variants.items() if v in names}


def _scale(study: Study, scale: str) -> tuple[list[str], dict[str, list]]:
    """A scale's overrides and the grid it runs (its own ``vary`` replaces the study's)."""
    spec = study.scales.get(scale, [])
    if isinstance(spec, list):
        return spec, study.vary
    unknown = set(spec) - {"set", "vary"}
    if unknown:
        raise ConfigError(f"[study.scales.{scale}] takes 'set' and 'vary', not {sorted(unknown)}.")
    return list(spec.get("set", [])), study.vary | dict(spec.get("vary", {}))


def run(name_or_path: str, scale: str = "smoke", overrides: list[str] = (), out: Path | str = "runs",
        variants: list[str] | None = None) -> Path:
    """Run every variant of a study (or those named in ``variants``) and write ``results.md`` /
    ``results.csv`` in the study folder."""
    from ppvae import experiment

    study = read(name_or_path)
    if study is None:
        raise ConfigError(f"{name_or_path!r} has no [study] table; run it without --scale.")
    planned = configs(study, scale, list(overrides), variants)
    study_dir = runs.new_run_dir(out, f"{study.name}-{scale}")
    rows = []
    for label, cfg in planned:
        run_dir = experiment.run(cfg, out=study_dir)
        metrics = runs.read_json(run_dir / runs.METRICS)
        rows.append({"run": label, "folder": run_dir.name} | {c: metrics.get(c) for c in study.columns})
        write_table(study_dir, rows, study.columns, f"{study.name} ({scale} scale)")
    study_figures(study_dir, [(label, cfg) for label, cfg in planned], rows, list(_scale(study, scale)[1]))
    return study_dir


def study_figures(folder: Path, planned: list[tuple[str, Config]], rows: list[dict], keys: list[str]) -> None:
    """Bound curves of every run against training samples seen; a heatmap for two-key grids; the
    2-D latent log densities (eval.sample_quality) and q(z|x) ellipses (eval.decoder_figures) of every
    run in one figure each when all runs have them."""
    import numpy as np

    from ppvae import plots
    from ppvae.sample_quality import DENSITY_FILE
    from ppvae.sampling import POSTERIOR_FILE, density_figure, posterior_figure

    densities = [folder / r["folder"] / DENSITY_FILE for r in rows]
    if all(p.is_file() for p in densities):
        density_figure([np.load(p)["panels"] for p in densities], [r["run"] for r in rows],
                       folder / "latent_density.png")
    posteriors = [folder / r["folder"] / POSTERIOR_FILE for r in rows]
    if all(p.is_file() for p in posteriors):
        posterior_figure(posteriors, [r["run"] for r in rows], folder / "posteriors.png")

    series = {}
    for (label, cfg), row in zip(planned, rows):
        hist = runs.read_jsonl(folder / row["folder"] / runs.EPOCHS)
        seen = [h["step"] * cfg.train.batch_size for h in hist]
        series[f"{label} (train {_objective(cfg)})"] = (seen, [-h["train_loss"] for h in hist])
        series[f"{label} (test ELBO)"] = (seen, [h["test_elbo"] for h in hist])
    plots.curves(series, folder / "curves.png", xlabel="training samples seen", title="lower bound per example")
    if len(keys) == 2:
        metrics = [runs.read_json(folder / r["folder"] / runs.METRICS) for r in rows]
        values = {key: _ordered({_get(cfg, key) for _, cfg in planned}) for key in keys}
        for metric, sign in (("final_train_loss", -1.0), ("test_elbo", 1.0)):
            grid = [[float("nan")] * len(values[keys[1]]) for _ in values[keys[0]]]
            for (_, cfg), m in zip(planned, metrics):
                i, j = values[keys[0]].index(_get(cfg, keys[0])), values[keys[1]].index(_get(cfg, keys[1]))
                grid[i][j] = sign * m[metric]
            plots.heatmap(grid, [str(v) for v in values[keys[0]]], [str(v) for v in values[keys[1]]],
                          folder / f"heatmap_{metric}.png", ylabel=keys[0], xlabel=keys[1],
                          title=("train bound" if sign < 0 else "test ELBO") + " per example")


def _objective(cfg: Config) -> str:
    """What a run's train curve shows: its training objective, which is not always the ELBO."""
    e = cfg.estimator
    name = {"iwae": f"IWAE k={e.k}", "renyi": f"Renyi a={e.alpha:g}, {e.num_particles} samples"}.get(e.name, "ELBO")
    return name + (f", beta={e.beta:g}" if e.beta != 1.0 else "")


def _ordered(values: set) -> list:
    """Grid values in their natural order (20 before 100), or as text when they do not compare."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _get(cfg: Config, key: str):
    """A config value by dotted key, e.g. 'train.batch_size' (lists become tuples so they can be sorted)."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return tuple(value) if isinstance(value, list) else value


def write_table(folder: Path, rows: list[dict], columns: list[str], title: str) -> None:
    """results.csv and results.md: one row per run."""
    header = ["run", *columns, "folder"]
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)  # noqa: E731
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(r.get(h)) for h in header) + " |" for r in rows]
    runs.write_bytes_atomic(folder / "results.md", ("\n".join(lines) + "\n").encode())
