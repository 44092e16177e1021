"""The figures every run gets: reconstructions, prior samples, the bound per epoch, with a 2-D latent the
posterior-mean map, with 2-5 latent units the learned manifold (slices of it beyond 2); per-pixel sigma maps
where p(x|z) has one."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import torch

from ppvae import plots, runs
from ppvae.data import Dataset
from ppvae.evaluation.sampling import uncertainty_figures
from ppvae.sites import decode_mean, posterior_mean, prior_samples

SHOWN = {"none": ("test images", "data"), "threshold": ("thresholded test images", "data"),
         "static": ("test images as one binarized draw", "draw"),
         "dynamic": ("test images as one binarized draw", "draw")}  # what the data rows show, by data.binarize


@torch.no_grad()
def run_figures(model: Callable, guide: Callable, data: Dataset, run_dir: Path) -> list[Path]:
    """Draw the standard figures of a trained pair into ``run_dir`` (the curves from its ``metrics.jsonl``);
    rows of features, not images, get per-feature plots in the data's own units instead of image grids."""
    x, y = data.test_x[:32], None if data.test_y is None else data.test_y[:32]
    shape = data.image_shape
    z = posterior_mean(guide, x, y)
    recon = decode_mean(model, z, x, y)
    # labels for conditional pairs (ignored by others): one class per row of 8 samples
    classes = data.num_classes if data.train_y is not None else 0
    labels = torch.arange(classes, device=x.device).repeat_interleave(8) if classes else None
    samples = data.original(prior_samples(model, x, 8 * classes if classes else 64, labels))
    if data.images:
        shown, label = SHOWN[data.binarize]
        k = min(16, max(1, x.shape[0] // 2))  # two rows of data and their reconstructions (one for a tiny set)
        rows = 4 if x.shape[0] >= 2 * k else 2
        pairs = data.original(torch.stack([x[:k], recon[:k], x[k:2 * k], recon[k:2 * k]][:rows]).reshape(-1, x.shape[1]))
        out = [plots.image_grid(pairs.cpu().numpy(), shape, run_dir / "reconstructions.png", rows=rows,
                                title=f"{shown} and their reconstructions (means)",
                                row_labels=[label, "recon"] * (rows // 2)),
               plots.image_grid(samples.cpu().numpy(), shape, run_dir / "samples.png", rows=classes or None,
                                title="samples from the prior (means)")]
    else:
        n = min(500, data.test_x.shape[0])
        xs, ys = data.test_x[:n], None if data.test_y is None else data.test_y[:n]
        rec = decode_mean(model, posterior_mean(guide, xs, ys), xs, ys)
        draws = data.original(prior_samples(model, xs, n, ys))
        out = [plots.feature_scatter(data.original(xs).cpu().numpy(), data.original(rec).cpu().numpy(),
                                     run_dir / "reconstructions.png", title="test data against reconstructions "
                                                                            "(means), per feature"),
               plots.feature_histograms({"test data": data.original(xs).cpu().numpy(), "prior samples (means)":
                                         draws.cpu().numpy()}, run_dir / "samples.png",
                                        title="test data and samples from the prior, per feature")]
    hist = runs.read_jsonl(run_dir / runs.EPOCHS)
    epochs = [h["epoch"] for h in hist]
    series = {"train (objective)": (epochs, [-h["train_loss"] for h in hist]),
              "test ELBO": (epochs, [h["test_elbo"] for h in hist])}
    validated = [h for h in hist if h.get("valid_bound") is not None]
    if validated:
        series["validation bound"] = ([h["epoch"] for h in validated], [h["valid_bound"] for h in validated])
    out.append(plots.curves(series, run_dir / "elbo.png", title="lower bound per example"))
    rates = [h.get("lr") for h in hist]
    if None not in rates and len(set(rates)) > 1:  # a schedule: the learning rate per epoch
        out.append(plots.curves({"learning rate": (epochs, rates)}, run_dir / "lr.png", ylabel="learning rate",
                                title="learning rate per epoch", log_y=True))
    if z.shape[-1] == 2:
        n = min(2000, data.test_x.shape[0])
        ty = None if data.test_y is None else data.test_y[:n]
        zt = posterior_mean(guide, data.test_x[:n], ty)
        out.append(plots.latent_scatter(zt.cpu().numpy(), None if ty is None else ty.cpu().numpy(),
                                        run_dir / "latent.png"))
    if data.images and 2 <= z.shape[-1] <= MANIFOLD_MAX_DIM:
        out += manifolds(model, data, x, None if labels is None else labels[:1], z.shape[-1], run_dir)
    return out + (uncertainty_figures(model, guide, data, run_dir) if data.images else [])


MANIFOLD_MAX_DIM = 5  # latents up to this size get a manifold per pair of units (10 figures at 5)


def manifolds(model: Callable, data: Dataset, x: torch.Tensor, label: torch.Tensor | None, dim: int,
              run_dir: Path) -> list[Path]:
    """E[x | z] on an inverse-CDF grid of two latent units: ``manifold.png`` for a 2-D latent, and for 3-5
    units one slice per pair, ``manifold_z{i}_z{j}.png``, the other units at the prior's median 0."""
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 15, device=x.device))
    grid = torch.cartesian_prod(values, values).flip(-1)  # the first unit along a row, the second down the rows
    ticks = values.cpu().tolist()
    out = []
    for i, j in itertools.combinations(range(dim), 2):
        zz = torch.zeros(len(grid), dim, device=x.device)
        zz[:, i], zz[:, j] = grid[:, 0], grid[:, 1]
        manifold = decode_mean(model, zz, x, None if label is None else label.expand(len(zz)))
        name, where = ("manifold.png", "") if dim == 2 else (f"manifold_z{i + 1}_z{j + 1}.png",
                                                            f" of z{i + 1}, z{j + 1} (the others 0)")
        out.append(plots.image_grid(data.original(manifold).cpu().numpy(), data.image_shape, run_dir / name,
                                    rows=15, title=f"learned manifold: E[x | z] on an inverse-CDF grid{where}",
                                    axes=(ticks, ticks)))
    return out


__all__ = ["run_figures", "manifolds", "MANIFOLD_MAX_DIM"]
