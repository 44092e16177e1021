"""Estimator A trained with L samples per point (``samples_l.toml``): per (L, Nz), mean ± s.d. over seeds of the
test NLL, the seconds per epoch, and the encoder-gradient variance of A at L = 5 over L = 1 measured at each
run's trained parameters (the gradient study's `trace` rows at k = 1 and 5; 1/5 if the L draws were independent
and nothing else varied).

    python experiments/results/aevb_estimator_a_vs_b/samples_l.py STUDY_DIR > samples_l.md
"""

import csv
import json
import statistics
import sys
from pathlib import Path


def main() -> None:
    cells: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for run in sorted(Path(sys.argv[1]).glob("*/gradient_variance.csv")):
        cfg = json.loads((run.parent / "config.json").read_text())
        metrics = json.loads((run.parent / "metrics.json").read_text())
        rows = {(r["estimator"], r["k"]): float(r["encoder_variance"]) for r in csv.DictReader(open(run))}
        key = (cfg["estimator"]["num_particles"], cfg["model"]["latent_dim"])
        cells.setdefault(key, []).append((metrics["test_nll"], metrics["seconds_per_epoch"],
                                          rows["trace", "5"] / rows["trace", "1"]))
    show = lambda v: f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"  # noqa: E731
    print("| L (trained) | Nz | seeds | test NLL | s / epoch | encoder variance, L = 5 / L = 1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (samples, nz), values in sorted(cells.items(), key=lambda c: (c[0][1], c[0][0])):
        nll, seconds, ratio = zip(*values)
        print(f"| {samples} | {nz} | {len(values)} | {show(nll)} | {show(seconds)} | {show(ratio)} |")


if __name__ == "__main__":
    main()
