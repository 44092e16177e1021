"""Figures for run folders (PNG, non-interactive backend). Functions take arrays, not models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, image_shape: Sequence[int], path: Path, *, rows: int | None = None,
               title: str = "", row_labels: Sequence[str] = ()) -> Path:
    """Tile flat images ``[N, D]`` (values in [0, 1]) into a grid."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    h, w = image_shape[-2], image_shape[-1]
    n = images.shape[0]
    rows = rows or int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for i, img in enumerate(images.reshape(n, -1)[:, : h * w]):
        r, c = divmod(i, cols)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img.reshape(h, w)
    fig, ax = plt.subplots(figsize=(max(3, cols * w / 14), max(3, rows * h / 14)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + 1) * i + h / 2 for i in range(len(row_labels))], row_labels) if row_labels else ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, path)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, *, xlabel: str = "epoch",
           ylabel: str = "nats per example", title: str = "") -> Path:
    """Line plot of named ``(x, y)`` series, e.g. train and test ELBO per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def latent_scatter(z: np.ndarray, labels: np.ndarray | None, path: Path, title: str = "posterior means") -> Path:
    """2-D posterior means, coloured by label when there are labels."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels if labels is not None else "tab:blue", cmap="tab10", s=6, alpha=0.8)
    if labels is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    return _save(fig, path)


def heatmap(values: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str], path: Path, *,
            ylabel: str = "", xlabel: str = "", title: str = "") -> Path:
    """An annotated grid of numbers, e.g. the bound over (samples per point, batch size)."""
    arr = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.5 * len(rows)))
    im = ax.imshow(arr, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(arr):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
