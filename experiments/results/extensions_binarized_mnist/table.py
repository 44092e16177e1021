"""Pivot the results.csv of one or more extensions_binarized_mnist study folders into one table
(a row per variant, a column per latent size, each cell "test NLL / test ELBO" in nats) and a
figure of test NLL against latent size, one line per variant. A conditional row with a
test_nll_marginal (eval.label_marginal) is drawn with it: -log p(x), comparable with the others.

    python experiments/results/extensions_binarized_mnist/table.py --figure nll_vs_nz.png STUDY_DIR... > table.md
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(folders: list[str]) -> dict[str, dict[int, tuple[float, float]]]:
    """variant -> latent size -> (test NLL, test ELBO)."""
    cells: dict[str, dict[int, tuple[float, float]]] = {}
    for folder in folders:
        for row in csv.DictReader(open(Path(folder) / "results.csv")):
            parts = dict(p.split("=") if "=" in p else ("variant", p) for p in row["run"].split(", "))
            nll = row.get("test_nll_marginal") or row["test_nll"]
            nz = int(parts["model.latent_dim"])
            cells.setdefault(parts["variant"], {})[nz] = (float(nll), float(row["test_elbo"]))
    return cells


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+")
    p.add_argument("--figure")
    args = p.parse_args()
    cells = read(args.folders)
    sizes = sorted({nz for row in cells.values() for nz in row})
    print("| row | " + " | ".join(f"Nz = {nz}" for nz in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for variant, row in cells.items():
        print(f"| {variant} | " + " | ".join(f"{row[nz][0]:.1f} / {row[nz][1]:.1f}" if nz in row else "-"
                                            for nz in sizes) + " |")
    if args.figure:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        denoising = sorted(v for v in cells if v.startswith("dvae"))  # dashed, in viridis by name
        others = [v for v in cells if v not in denoising]
        colors = {v: plt.cm.tab10(i) for i, v in enumerate(others)}
        colors |= {v: plt.cm.viridis(i / max(1, len(denoising) - 1)) for i, v in enumerate(denoising)}
        for variant in others + denoising:
            nz = sorted(cells[variant])
            ax.plot(nz, [cells[variant][n][0] for n in nz], marker="o", label=variant, color=colors[variant],
                    linestyle="--" if variant in denoising else "-")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("latent size Nz")
        ax.set_ylabel("test NLL, nats (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=90)


if __name__ == "__main__":
    main()
