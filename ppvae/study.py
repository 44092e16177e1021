"""Multi-run studies: one TOML file, a ``[study]`` table, a grid of runs and a results table.

A study file is an ordinary experiment (its sections are the shared base config) plus::

    [study]
    vary = { "model.latent_dim" = [3, 5, 10] }          # a grid: every combination is a run
    variants = { vae = [], ae = ["guide.family=delta"] } # named override sets, crossed with the grid
    seeds = [0, 1]                                       # each seed is a separate run (a chain)
    columns = ["test_nll", "test_elbo", "test_kl"]       # metrics.json keys for the table
    [study.scales]
    smoke = ["data.name=digits", "train.epochs=2"]       # ppvae run NAME --scale smoke
    full = ["data.name=mnist", "train.epochs=100"]

``ppvae run NAME --scale smoke`` writes one run folder per variant inside a study folder,
then ``results.md`` and ``results.csv`` with one row per run.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
import re
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


def configs(study: Study, scale: str, overrides: list[str] = ()) -> list[tuple[str, Config]]:
    """(label, validated config) for every run; all are validated before any run starts."""
    if study.scales and scale not in study.scales:
        raise ConfigError(f"Study {study.name!r} has no scale {scale!r}; choose one of {', '.join(study.scales)}.")
    keys = list(study.vary)
    out = []
    for values in itertools.product(*(study.vary[k] for k in keys)):
        grid = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
        for variant, extra in study.variants.items():
            for seed in study.seeds:
                label = ", ".join([variant] * bool(variant) + grid + [f"seed={seed}"] * (len(study.seeds) > 1))
                raw = copy.deepcopy(study.base)
                raw["name"] = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{study.name}-{label}" if label else study.name)
                raw = apply_overrides(raw, [*study.scales.get(scale, []), *extra, *grid, f"train.seed={seed}",
                                            *overrides])
                out.append((label or study.name, from_dict(raw)))
    return out


def run(name_or_path: str, scale: str = "smoke", overrides: list[str] = (), out: Path | str = "runs") -> Path:
    """Run every variant of a study and write ``results.md`` / ``results.csv`` in the study folder."""
    from ppvae import experiment

    study = read(name_or_path)
    if study is None:
        raise ConfigError(f"{name_or_path!r} has no [study] table; run it without --scale.")
    planned = configs(study, scale, list(overrides))
    study_dir = runs.new_run_dir(out, f"{study.name}-{scale}")
    rows = []
    for label, cfg in planned:
        run_dir = experiment.run(cfg, out=study_dir)
        metrics = runs.read_json(run_dir / runs.METRICS)
        rows.append({"run": label, "folder": run_dir.name} | {c: metrics.get(c) for c in study.columns})
        write_table(study_dir, rows, study.columns, f"{study.name} ({scale} scale)")
    return study_dir


def write_table(folder: Path, rows: list[dict], columns: list[str], title: str) -> None:
    """results.csv and results.md: one row per run."""
    header = ["run", *columns, "folder"]
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(r.get(h)) for h in header) + " |" for r in rows]
    runs.write_bytes_atomic(folder / "results.md", ("\n".join(lines) + "\n").encode())
