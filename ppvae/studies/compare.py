"""``ppvae compare``: one table, ArviZ diagnostics and figures across run folders.

Runs whose configs agree except for ``train.seed`` (and bookkeeping such as the run
name or data folder) form one *configuration*, and its seeds are treated as chains. A
setting that names another run folder (a study's ``{run:normal}``, one per seed) counts as
that run's configuration. A configuration is named as the study that planned it named it,
else by the config keys in which the configurations differ.
Each chain's draws are bootstrap resamples of that run's test set (from the per-point
results in ``pointwise.npz``), so for a final metric such as the test NLL

* R-hat compares the spread between seeds with the test-set sampling error: near 1, the
  seeds agree to within what the test set can resolve; clearly above 1.01, the seed
  matters more than the test set, and the spread across seeds is the honest error bar;
* ESS is the number of effectively independent draws left after that disagreement;
* the forest plot pools every seed's draws, so its interval covers both sources.

Written to the output folder: ``runs.csv``, ``configs.csv``, ``comparison.md`` (all
tables and figure links), ``forest_test_nll.png``, ``khat.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppvae import plots, runs, tables
from ppvae.config import build, from_run_folder
from ppvae.errors import PPVAEError
from ppvae.evaluation import diagnostics
from ppvae.evaluation.loglik import POINTWISE, load_pointwise
from ppvae.plots import plt

BOOTSTRAP_DRAWS = 400
NOT_CONFIG = ("train.seed", "name", "description", "data.data_dir", "data.download", "train.device")
# posterior variables: per-point column -> what the draw of a test set is the mean of
VARIABLES = {
    "test_nll": lambda p: -p["ll"],
    "test_elbo": lambda p: p["elbo"],
    "test_kl": lambda p: p["kl"],
    "khat_share_above_0_7": lambda p: np.where(np.isnan(p["khat"]), np.nan, p["khat"] > diagnostics.KHAT_GOOD),
}
RUN_COLUMNS = [("config", "config"), ("seed", "seed"), ("test_nll", "test NLL"), ("test_ll_se", "SE"),
               ("test_elbo", "ELBO"), ("eval_k", "eval k"), ("test_kl", "KL"), ("active_units", "active units"),
               ("khat_share_above_0_7", "k-hat > 0.7"), ("khat_share_above_1", "k-hat > 1"),
               ("ess_median", "ESS median"), ("seconds_per_epoch", "s / epoch"), ("folder", "run")]
SUMMARY_METRICS = ["test_nll", "test_elbo", "test_kl", "active_units", "khat_share_above_0_7",
                   "khat_share_above_1", "seconds_per_epoch"]


class RunFolderError(PPVAEError):
    """A folder given to ``ppvae compare`` is not an evaluated run folder."""


@dataclass
class Run:
    path: Path
    config: dict  # flattened: {"estimator.name": "iwae", ...}
    metrics: dict
    history: list[dict]
    pointwise: dict[str, np.ndarray]
    study_label: str | None = None  # its configuration's name in the study that planned it

    @property
    def seed(self) -> int:
        return self.config.get("train.seed", 0)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def run_folders(paths: list[Path | str]) -> list[Path]:
    """Run folders among ``paths``; a folder holding run folders (a study) stands for all of them."""
    out = []
    for path in map(Path, paths):
        if (path / runs.CONFIG).is_file():
            out.append(path)
        elif path.is_dir() and (inner := sorted(p.parent for p in path.glob(f"*/{runs.CONFIG}"))):
            out += inner
        else:
            raise RunFolderError(f"{path} is not a run folder (no {runs.CONFIG}) nor a folder of run folders; "
                                 "give the folders 'ppvae run' printed.")
    return out


def load(path: Path, trust: bool = False) -> Run:
    """A run folder's config, metrics, per-epoch history and per-point evaluation (``trust``: run the ``.py``
    files its config names even if this user has not run them before)."""
    for name in (runs.METRICS, POINTWISE):
        if not (path / name).is_file():
            raise RunFolderError(f"{path} has no {name}: it was not evaluated, or was evaluated by an older ppvae. "
                                 f"Run 'ppvae eval {path}' first.")
    with from_run_folder(path, trust):
        config = build(runs.read_json(path / runs.CONFIG)).to_dict()  # a 0.1 run folder reads as today's keys
    metrics = runs.read_json(path / runs.METRICS)
    flat = {k: _run_reference(v, path) for k, v in flatten(config).items()}
    # what the shown evaluation used, not what config.json planned: runs evaluated differently never pool as seeds
    flat["eval.k"], flat["eval.num_test"] = metrics.get("eval_k", flat.get("eval.k")), metrics.get("eval_points")
    return Run(path, flat, metrics, runs.read_jsonl(path / runs.EPOCHS), load_pointwise(path), _study_label(path))


SEED_IN_NAME = re.compile(r"(, seed=|__seed_)\d+$")  # a seed run's name or folder name, as a study writes it


def _run_reference(value, path: Path):
    """A value naming another run folder (``model.weights.init``: a study's ``{run:normal}``, one folder per
    seed) stands for that run's configuration, so the seeds that start from it still pool as one: its name
    without the seed and a digest of its config without the seed. The folder is looked for where the config
    says, then beside ``path`` (a study folder copied or merged from elsewhere)."""
    if not isinstance(value, str) or not value:
        return value
    for folder in (Path(value), path.parent / Path(value).name):
        if (folder / runs.CONFIG).is_file():
            config = runs.read_json(folder / runs.CONFIG)
            name = SEED_IN_NAME.sub("", str(config.get("name") or folder.name))
            kept = {k: v for k, v in flatten(config).items() if k not in NOT_CONFIG}
            digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
            return f"run {name} ({digest})"
    return value


def _study_label(path: Path) -> str | None:
    """The configuration's name in the study that planned this run (its ``study.json``), if any."""
    plan = path.parent / "study.json"
    if not plan.is_file():
        return None
    return next((r.get("config") for r in runs.read_json(plan).get("runs", []) if r.get("folder") == path.name),
                None)


def configurations(all_runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by config without the seed. Each group is labelled by its name in the study that
    planned it where every group has a distinct one, else by the keys in which the groups differ."""
    groups: dict[str, list[Run]] = {}
    for r in all_runs:
        key = json.dumps({k: v for k, v in r.config.items() if k not in NOT_CONFIG}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    members = list(groups.values())
    named = [{r.study_label for r in g} for g in members]
    every = set().union(*named)
    if all(len(n) == 1 for n in named) and None not in every and len(every) == len(members):
        return {g[0].study_label: g for g in members}
    firsts = [g[0].config for g in members]
    keys = sorted({k for c in firsts for k in c} - set(NOT_CONFIG))
    differing = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in firsts}) > 1]
    # where a part itself differs (model.prior.name), its parameters (model.prior.a) go without saying,
    # unless two groups differ only in them
    brief = [k for k in differing if not any(f"{k[:i]}.name" in differing
                                             for i in range(len(k)) if k[i] == "." and not k.endswith(".name"))]
    for shown in (brief, differing):
        labels = [", ".join(f"{k}={_plain(c.get(k))}" for k in shown) for c in firsts]
        if len(set(labels)) == len(members):
            break
    if not differing:
        labels = [SEED_IN_NAME.sub("", str(c.get("name") or g[0].path.name)) for c, g in zip(firsts, members)]
    if len(set(labels)) < len(members):  # apart only in a value's type (1 against "1") or a key's absence
        labels = [f"{label} [{g[0].path.name}]" for label, g in zip(labels, members)]
    return dict(zip(labels, members))


def _plain(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def bootstrap_draws(members: list[Run], draws: int = BOOTSTRAP_DRAWS) -> dict[str, np.ndarray]:
    """``[chains, draws]`` per posterior variable: means over bootstrap resamples of each run's test set."""
    out: dict[str, list] = {name: [] for name in VARIABLES}
    for chain, r in enumerate(members):
        n = len(r.pointwise["ll"])
        idx = np.random.default_rng([chain, r.seed, n]).integers(0, n, size=(draws, n), dtype=np.int32)
        for name, column in VARIABLES.items():
            values = np.asarray(column(r.pointwise), dtype=np.float64)
            known = ~np.isnan(values)  # k-hat is undefined for some guides: average over the points that have one
            out[name].append(np.nanmean(values[idx], axis=1) if known.any() else np.full(draws, np.nan))
    return {name: np.stack(chains) for name, chains in out.items()}


def training_curves(groups: dict[str, list[Run]], path: Path) -> Path:
    """Train objective and test ELBO per epoch: one colour per configuration, one line style per seed."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = ["-", "--", ":", "-."]
    for color, (label, members) in enumerate(groups.items()):
        for i, r in enumerate(members):
            epochs = [h["epoch"] for h in r.history]
            kw = dict(color=f"C{color % 10}", linestyle=styles[i % len(styles)], alpha=0.9,
                      label=label if i == 0 else None)
            axes[0].plot(epochs, [-h["train_loss"] for h in r.history], **kw)
            axes[1].plot(epochs, [h["test_elbo"] for h in r.history], **kw)
    for ax, title in zip(axes, ("training objective (per example)", "test ELBO (per example)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, title="configuration (line style: seed)", title_fontsize=8)
    fig.tight_layout()
    return plots.save(fig, path)


def compare(paths: list[Path | str], out: Path | str | None = None, trust: bool = False) -> tuple[Path, str]:
    """Compare run folders; returns the output folder and the tables as Markdown."""
    all_runs = [load(p, trust) for p in run_folders(paths)]
    groups = configurations(all_runs)
    out_dir = Path(out) if out else runs.new_run_dir("runs", "compare")
    out_dir.mkdir(parents=True, exist_ok=True)

    run_rows = []
    for label, members in groups.items():
        for r in members:
            values = r.metrics | {"config": label, "seed": r.seed, "folder": r.path.name}
            run_rows.append([values.get(key) for key, _ in RUN_COLUMNS])

    datasets, summary_rows, convergence_rows = [], [], []
    summary_header = ["config", "seeds"] + [f"{m} {s}" for m in SUMMARY_METRICS for s in ("mean", "sd")]
    for label, members in groups.items():
        draws = bootstrap_draws(members)
        datasets.append(diagnostics.inference_data(draws, attrs={"configuration": label,
                                                                 "seeds": [r.seed for r in members]}))
        row: list = [label, len(members)]
        for m in SUMMARY_METRICS:
            row += tables.mean_sd(r.metrics.get(m) for r in members)
        summary_rows.append(row)
        convergence_rows.append([label, len(members)] + [v for name in VARIABLES
                                                         for v in diagnostics.rhat_ess(draws[name])])
    convergence_header = ["config", "seeds"] + [f"{name} {s}" for name in VARIABLES for s in ("R-hat", "ESS")]

    figures = [
        diagnostics.forest_plot(datasets, list(groups), "test_nll", out_dir / "forest_test_nll.png",
                                title="test NLL (nats): seeds pooled, bootstrap over test points"),
        diagnostics.khat_plot([r.pointwise["khat"] for members in groups.values() for r in members],
                              [f"{label} (seed {r.seed})" for label, members in groups.items() for r in members],
                              out_dir / "khat.png"),
        training_curves(groups, out_dir / "training_curves.png"),
    ]
    runs.write_bytes_atomic(out_dir / "runs.csv", tables.csv_bytes([k for k, _ in RUN_COLUMNS], run_rows))
    runs.write_bytes_atomic(out_dir / "configs.csv", tables.csv_bytes(summary_header + convergence_header[2:],
                                                          [s + c[2:] for s, c in zip(summary_rows, convergence_rows)]))
    short = ["config", "seeds", "test NLL", "sd", "ELBO", "sd", "KL", "sd", "active units", "sd",
             "k-hat > 0.7", "sd", "k-hat > 1", "sd", "s / epoch", "sd"]
    text = ("## Runs\n\n" + tables.markdown([title for _, title in RUN_COLUMNS], run_rows)
              + "\n## Configurations (mean and sd across seeds)\n\n" + tables.markdown(short, summary_rows)
              + f"\n## Seeds as chains ({BOOTSTRAP_DRAWS} bootstrap draws of the test set per seed)\n\n"
              + tables.markdown(convergence_header, convergence_rows))
    report = ("# Comparison\n\n" + "\n".join(f"- `{r.path}`" for r in all_runs) + "\n\n" + text
              + "\nR-hat near 1: the seeds agree to within the test-set sampling error; above 1.01: the seed "
                "matters more than the test set (R-hat needs two or more seeds).\n\n## Figures\n\n"
              + "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n")
    runs.write_bytes_atomic(out_dir / "comparison.md", report.encode())
    return out_dir, text


__all__ = ["RunFolderError", "Run", "compare", "configurations", "bootstrap_draws", "run_folders", "load"]
