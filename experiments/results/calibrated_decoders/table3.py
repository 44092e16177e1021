"""The source's table 3 from study folders: IWAE k = 20 under the prior and under the aggregate-posterior mixture,
mean ± s.d. over training seeds, per variant.

    python experiments/results/calibrated_decoders/table3.py STUDY_DIR [STUDY_DIR ...]
"""

import json
import statistics
import sys
from pathlib import Path

COLUMNS = [("test_ll_own_prior", 1), ("test_ll_mixture_prior_draws", 1), ("mixture_prior_gain_draws", 2),
           ("mixture_prior_gain_draws_se", 2), ("test_ll_mixture_prior_means", 0), ("fd_prior", 0),
           ("fd_aggregate", 0), ("active_units", 1)]


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(folders: list[str]) -> None:
    runs: dict[str, list[dict]] = {}
    for folder in folders:
        for study in json.loads((Path(folder) / "study.json").read_text())["runs"]:
            metrics = Path(folder) / study["folder"] / "metrics.json"
            if metrics.is_file():
                runs.setdefault(study["config"], []).append(json.loads(metrics.read_text()))
    print("| configuration | seeds | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("| --- " * (len(COLUMNS) + 2) + "|")
    for label, found in runs.items():
        cells = [cell([m[name] for m in found if isinstance(m.get(name), (int, float))], digits)
                 for name, digits in COLUMNS]
        print(f"| {label} | {len(found)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
