"""Encoder-gradient variance of estimator B (meanfield) over A (trace) at one sample, per run of an
aevb_estimator_a_vs_b study folder, beside the same ratio for two identical estimators (iwae-standard and
trace at k = 1): the size of the measurement's own noise. Runs trained with either estimator are measured
at their own trained parameters.

    python experiments/results/aevb_estimator_a_vs_b/variance_ratios.py STUDY_DIR > variance_ratios.md
"""

import csv
import json
import math
import statistics
import sys
from pathlib import Path


def ratios(run: Path) -> tuple[float, float]:
    table = csv.DictReader(open(run / "gradient_variance.csv"))
    rows = {(r["estimator"], r["k"]): float(r["encoder_variance"]) for r in table}
    a = rows["trace", "1"]
    return rows["meanfield", "1"] / a, rows["iwae-standard", "1"] / a


def main() -> None:
    cells: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in sorted(Path(sys.argv[1]).glob("*/gradient_variance.csv")):
        cfg = json.loads((run.parent / "config.json").read_text())
        key = (cfg["estimator"]["name"], cfg["model"]["latent_dim"])
        cells.setdefault(key, []).append(ratios(run.parent))
    print("| trained with | Nz | seeds | B / A (meanfield / trace) | identical: iwae k=1 / trace |")
    print("| --- | --- | --- | --- | --- |")
    logs_b, logs_same = [], []
    for (name, nz), values in sorted(cells.items()):
        b, same = zip(*values)
        logs_b += map(math.log, b)
        logs_same += map(math.log, same)
        show = lambda v: f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"  # noqa: E731
        print(f"| {name} | {nz} | {len(values)} | {show(b)} | {show(same)} |")
    for label, logs in (("B / A", logs_b), ("identical", logs_same)):
        m, se = statistics.fmean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
        print(f"\n{label}, all {len(logs)} runs: geometric mean {math.exp(m):.3f}, "
              f"95 % interval {math.exp(m - 1.96 * se):.3f}-{math.exp(m + 1.96 * se):.3f}")


if __name__ == "__main__":
    main()
