"""Figures for run folders: the one place matplotlib is set up (non-interactive backend, PNG).

Every module that draws imports ``plt`` and :func:`save` from here; the figure functions below
take arrays, not models.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppvae import runs  # noqa: E402

DPI = 110


def save(fig: matplotlib.figure.Figure, path: Path, tight: bool = True) -> Path:
    """Write ``fig`` as PNG atomically (a crash leaves the previous file intact) and close it."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    runs.write_bytes_atomic(path, buffer.getvalue())
    return path


def pixels(images: np.ndarray, image_shape: Sequence[int], grey: bool = False) -> np.ndarray:
    """Flat images ``[N, D]`` (channel-major, as the models see them) as ``[N, H, W]`` for one channel, or
    ``[N, H, W, 3]`` for colour (``grey``: the mean over the channels, for a per-pixel sigma)."""
    c, h, w = (1, *image_shape[-2:]) if len(image_shape) < 3 else tuple(image_shape[-3:])
    images = np.asarray(images).reshape(len(images), c, h, w)
    if c == 1 or grey:
        return images.mean(1)
    return images[:, :3].transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, image_shape: Sequence[int], path: Path, *, rows: int | None = None,
               title: str = "", row_labels: Sequence[str] = (),
               axes: tuple[Sequence[float], Sequence[float]] | None = None) -> Path:
    """Tile flat images ``[N, D]`` (values in [0, 1]) into a grid; ``axes``: the values (z1 per column,
    z2 per row) the tiles stand for, written as ticks (the learned manifold)."""
    tiles = pixels(np.clip(np.asarray(images, dtype=np.float32), 0, 1), image_shape)
    n, h, w = tiles.shape[:3]
    rows = rows or int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles.shape[3:]))
    for i, img in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img
    fig, ax = plt.subplots(figsize=(max(3, cols * w / 14), max(3, rows * h / 14)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + 1) * i + h / 2 for i in range(len(row_labels))], row_labels) if row_labels else ax.set_yticks([])
    if axes is not None:
        every = max(1, len(axes[0]) // 7)
        ax.set_xticks([(w + 1) * i + w / 2 for i in range(0, len(axes[0]), every)],
                      [f"{v:.2g}" for v in axes[0][::every]])
        ax.set_yticks([(h + 1) * i + h / 2 for i in range(0, len(axes[1]), every)],
                      [f"{v:.2g}" for v in axes[1][::every]])
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    ax.set_title(title)
    return save(fig, path)


def _feature_axes(features: int, title: str) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    cols = min(4, features)
    rows = int(np.ceil(features / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[features:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes.ravel()


def feature_scatter(data: np.ndarray, recon: np.ndarray, path: Path, *, title: str = "",
                    features: int = 8) -> Path:
    """For rows of features, not images: each of the first ``features`` features, data against
    reconstruction, with the identity line (what the reconstruction grid shows for images)."""
    features = min(features, data.shape[1])
    fig, axes = _feature_axes(features, title)
    for j, ax in zip(range(features), axes):
        lo, hi = float(min(data[:, j].min(), recon[:, j].min())), float(max(data[:, j].max(), recon[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=0.8)
        ax.scatter(data[:, j], recon[:, j], s=6, alpha=0.6)
        ax.set_title(f"feature {j}", fontsize=9)
        ax.set_xlabel("data", fontsize=8)
        ax.set_ylabel("reconstruction", fontsize=8)
    return save(fig, path)


def feature_histograms(series: dict[str, np.ndarray], path: Path, *, title: str = "", features: int = 8) -> Path:
    """For rows of features: the marginal histogram of each of the first ``features`` features, one
    outline per named series (say, test data and samples from the prior)."""
    features = min(features, next(iter(series.values())).shape[1])
    fig, axes = _feature_axes(features, title)
    for j, ax in zip(range(features), axes):
        for label, values in series.items():
            ax.hist(values[:, j], bins=30, density=True, histtype="step", label=label)
        ax.set_title(f"feature {j}", fontsize=9)
    axes[0].legend(fontsize=7)
    return save(fig, path)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, *, xlabel: str = "epoch",
           ylabel: str = "nats per example", title: str = "", log_y: bool = False) -> Path:
    """Line plot of named ``(x, y)`` series, e.g. train and test ELBO per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def latent_scatter(z: np.ndarray, labels: np.ndarray | None, path: Path, title: str = "posterior means") -> Path:
    """2-D posterior means, coloured by label when there are labels."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], color="tab:blue", s=6, alpha=0.8)
    else:
        fig.colorbar(ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8), ax=ax, label="label")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    return save(fig, path)


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
    return save(fig, path)


def _canvas(tiles: np.ndarray) -> np.ndarray:
    """Images ``[N, H, W(, 3)]`` side by side in one row, one pixel apart (NaN between them)."""
    n, h, w = tiles.shape[:3]
    canvas = np.full((h, n * (w + 1) - 1, *tiles.shape[3:]), np.nan)
    for i, img in enumerate(tiles):
        canvas[:, i * (w + 1): i * (w + 1) + w] = img
    return canvas


def image_rows(rows: Sequence[tuple[str, np.ndarray, bool]], image_shape: Sequence[int], path: Path, *,
               title: str = "") -> Path:
    """One labelled row per ``(label, images [N, D], is_sigma)``: images in [0, 1] (grey or colour), or per-pixel
    sigma (averaged over colour channels) on one colour scale (their min to max) shared by all sigma rows, with a
    colour bar (uncertainty maps)."""
    h, w = image_shape[-2], image_shape[-1]
    sigmas = [pixels(np.asarray(imgs), image_shape, grey=True) for _, imgs, is_sigma in rows if is_sigma]
    lo, hi = (float(min(s.min() for s in sigmas)), float(max(s.max() for s in sigmas))) if sigmas else (0.0, 1.0)
    n = max(imgs.shape[0] for _, imgs, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4, n * w / 12), 0.3 + len(rows) * h / 12 * 1.15), squeeze=False)
    for ax, (label, imgs, is_sigma) in zip(axes[:, 0], rows):
        canvas = _canvas(pixels(np.asarray(imgs, dtype=np.float32), image_shape, grey=is_sigma))
        canvas = canvas if is_sigma else np.clip(canvas, 0, 1)
        im = ax.imshow(canvas, cmap="magma" if is_sigma else "gray", vmin=lo if is_sigma else 0,
                       vmax=hi if is_sigma else 1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        if is_sigma:
            fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="sigma")
    axes[0, 0].set_title(title)
    return save(fig, path)


def log_density_grid(extent: tuple[float, float, float, float], panels: Sequence[Sequence[np.ndarray]],
                     row_labels: Sequence[str], col_labels: Sequence[str], path: Path, *, span: float = 12.0,
                     title: str = "") -> Path:
    """2-D log densities on a square grid (rows x columns of panels, each ``[G, G]`` indexed [y, x]),
    shown over the top ``span`` nats of each panel so the tails do not wash out the shape."""
    nr, nc = len(panels), len(panels[0])
    fig, axes = plt.subplots(nr, nc, figsize=(3.0 * nc, 2.8 * nr), squeeze=False)
    for i, row in enumerate(panels):
        for j, logp in enumerate(row):
            top = float(np.max(logp))
            ax = axes[i, j]
            ax.imshow(np.clip(logp, top - span, top), origin="lower", extent=extent, cmap="viridis", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_labels[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=9)
    fig.suptitle(title)
    return save(fig, path)


def posterior_ellipses(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]], path: Path, *,
                       max_ellipses: int = 300) -> Path:
    """One panel per ``(title, loc [N, 2], scale [N, 2], labels [N] or None)``: posterior means coloured by label,
    1-sd ellipses of the first ``max_ellipses`` points, and the prior's unit circle (dashed) for scale."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Circle

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, loc, scale, labels) in zip(axes[0], panels):
        colors = plt.cm.tab10(np.zeros(len(loc), int) if labels is None else np.asarray(labels) % 10)
        k = min(max_ellipses, len(loc))
        ax.add_collection(EllipseCollection(2 * scale[:k, 0], 2 * scale[:k, 1], np.zeros(k), units="xy",
                                            offsets=loc[:k], offset_transform=ax.transData,
                                            facecolors=colors[:k, :3], alpha=0.12, edgecolors="none"))
        ax.scatter(loc[:, 0], loc[:, 1], c=colors, s=3)
        ax.add_patch(Circle((0, 0), 1.0, fill=False, ls="--", color="k", lw=0.8))
        reach = float(np.max(np.abs(loc[:k]) + scale[:k])) if k else 1.0
        lim = max(1.2, reach, float(np.percentile(np.abs(loc), 99.5)) if len(loc) else 1.0) * 1.05
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$z_1$")
    axes[0, 0].set_ylabel("$z_2$")
    fig.suptitle("q(z|x) over test points: means and 1-sd ellipses (dashed: prior 1 sd)")
    return save(fig, path)


__all__ = ["plt", "save", "image_grid", "curves", "latent_scatter", "heatmap", "image_rows", "log_density_grid",
           "posterior_ellipses"]
