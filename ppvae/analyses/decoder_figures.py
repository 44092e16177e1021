"""What p(x|z) says beyond its mean, and q(z|x) of a 2-D latent: figures of the probabilistic decoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae import plots, registry, runs
from ppvae.analyses.base import Analysis, Result, RunContext, StudyRun
from ppvae.evaluation.sampling import normal_parts
from ppvae.sites import LATENT, OBSERVED, model_site, prior_draws

POSTERIOR_FILE = "posterior_2d.npz"  # q(z|x) means and sds over test points of a 2-D latent, with labels


@registry.register("analysis", "decoder_figures", images=True)
class DecoderFigures(Analysis):
    """mu(z), ancestral samples of p(x|z) and mu(z) +/- 1, 2 sigma; with a 2-D latent, q(z|x) means and
    1-sd ellipses by label (a study of such runs gets them side by side, posteriors.png)."""

    @torch.no_grad()
    def run(self, ctx: RunContext, n: int = 10) -> Result:
        """For z from the prior, mu(z), a true ancestral sample x ~ p(x|z) and, for a Gaussian, mu(z) -/+ 1,
        2 sigma and sigma itself (``decoder_samples.png``). With a 2-D Gaussian q(z|x), also its means and
        1-sd ellipses over up to 2000 test points by label (``posterior_ellipses.png``, arrays in
        ``posterior_2d.npz`` for the study figure)."""
        data, model, guide, run_dir = ctx.data, ctx.model, ctx.guide, ctx.run_dir
        pyro.set_rng_seed(ctx.seed + 3)
        x, y = data.test_x[:n], None if data.test_y is None else data.test_y[:n]
        fn = model_site(model, OBSERVED, prior_draws(model, x, n, y), x, y)
        mean = fn.mean.reshape(n, -1)
        rows = [("mu(z)", mean, False), ("x ~ p(x|z)", fn.sample().reshape(n, -1), False)]
        parts = normal_parts(fn)
        if parts is not None:
            sigma = parts[1].reshape(n, -1)
            rows += [(f"mu {k:+d} sigma", mean + k * sigma, False) for k in (-2, -1, 1, 2)] + [("sigma", sigma, True)]
        out = [plots.image_rows([(label, t.cpu().numpy(), is_sigma) for label, t, is_sigma in rows], data.image_shape,
                                run_dir / "decoder_samples.png", title="z from the prior: decoder mean, a sample of "
                                "p(x|z), and mean -/+ 1, 2 sigma")]
        m = min(2000, data.test_x.shape[0])
        ym = None if data.test_y is None else data.test_y[:m]
        q = normal_parts(poutine.trace(guide).get_trace(data.test_x[:m], ym).nodes[LATENT]["fn"])
        if q is None or q[0].shape[-1] != 2:
            return Result(figures=out)
        labels = {} if ym is None else {"labels": ym.cpu().numpy()}
        runs.write_npz(run_dir / POSTERIOR_FILE, {"loc": q[0].cpu().numpy(), "scale": q[1].cpu().numpy()} | labels)
        return Result(figures=out + [posterior_figure([run_dir / POSTERIOR_FILE], [run_dir.name],
                                                      run_dir / "posterior_ellipses.png")])

    @classmethod
    def aggregate(cls, folder: Path, study_runs: Sequence[StudyRun]) -> Result | None:
        """q(z|x) of every run with a 2-D latent side by side (e.g. per beta): ``posteriors.png``."""
        found = [r for r in study_runs if (r.run_dir / POSTERIOR_FILE).is_file()]
        if not found:
            return None
        return Result(figures=[posterior_figure([r.run_dir / POSTERIOR_FILE for r in found], [r.label for r in found],
                                                folder / "posteriors.png")])


def posterior_figure(files: Sequence[Path], titles: Sequence[str], path: Path) -> Path:
    """One panel of q(z|x) means and 1-sd ellipses per saved :data:`POSTERIOR_FILE` (e.g. per beta)."""
    panels = []
    for file, title in zip(files, titles):
        with np.load(file) as f:
            panels.append((title, f["loc"], f["scale"], f["labels"] if "labels" in f.files else None))
    return plots.posterior_ellipses(panels, path)
