"""Codes on (0, 1): how binary the posterior means are, and what rounding them to exactly 0 or 1 costs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pyro import poutine

from ppvae import plots, registry, runs, tables
from ppvae.analyses.base import Analysis, Result, RunContext, StudyRun
from ppvae.plots import plt
from ppvae.sites import LATENT, decode_mean, posterior_mean

CODES = "binary_codes.npz"  # the posterior-mean codes of the evaluated test images
COLUMNS = ["code_share_near_0_or_1", "code_bits_per_image", "code_bits_used", "code_distinct", "code_images",
           "code_nll_continuous", "code_nll_bits", "code_mse_continuous", "code_mse_bits"]


def _bernoulli_nll(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """-log p(x | mean) per image for binary x (nats)."""
    p = mean.clamp(1e-6, 1 - 1e-6)
    return -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1)


@registry.register("analysis", "binary_codes", images=True)
class BinaryCodes(Analysis):
    """How binary the posterior-mean codes are (share within 0.05 of 0 or 1, bits used) and the
    reconstruction cost of rounding them to bits."""

    title = "Codes on (0, 1)"

    @torch.no_grad()
    def run(self, ctx: RunContext) -> Result:
        """With a prior in logit coordinates (the Beta prior: z = logit(code)) the code mean is E_q[sigmoid(z)],
        read off the guide's distribution; otherwise (e.g. the 0-1 mixture prior) the code is z itself."""
        x, model, guide = ctx.test_x, ctx.model, ctx.guide
        q = poutine.trace(guide).get_trace(x, ctx.test_y).nodes[LATENT]["fn"]
        code_mean = getattr(getattr(q, "base_dist", q), "code_mean", None)
        if code_mean is not None:
            z = code_mean
            latent = torch.logit  # bits 0 and 1 become -inf and inf, which the decoder's sigmoid maps back exactly
        else:
            z = posterior_mean(guide, x, ctx.test_y)
            latent = lambda c: c  # noqa: E731
        z_bits = (z > 0.5).to(z.dtype)
        recon, recon_bits = decode_mean(model, latent(z), x), decode_mean(model, latent(z_bits), x)
        p_one = z_bits.double().mean(0)
        entropy = -(torch.special.xlogy(p_one, p_one) + torch.special.xlogy(1 - p_one, 1 - p_one)) / math.log(2)
        grid = torch.cat([x[:12], recon[:12], recon_bits[:12]]).cpu().numpy()
        figure = plots.image_grid(grid, ctx.data.image_shape, ctx.run_dir / "binary_codes.png", rows=3,
                                  title=f"{ctx.name}: data / continuous code / code rounded to bits",
                                  row_labels=["data", "E_q code", "bits"])
        runs.write_npz(ctx.run_dir / CODES, {"z": z.flatten().cpu().numpy(), "unit_interval": code_mean is not None})
        metrics = dict(zip(COLUMNS, [
            float((torch.minimum(z.abs(), (1 - z).abs()) < 0.05).double().mean()), int(z.shape[1]),
            float(entropy.sum()), int(torch.unique(z_bits, dim=0).shape[0]), int(x.shape[0]),
            float(_bernoulli_nll(x, recon).mean()), float(_bernoulli_nll(x, recon_bits).mean()),
            float(((recon - x) ** 2).mean()), float(((recon_bits - x) ** 2).mean())]))
        report = (tables.records([metrics], COLUMNS) + "\n`code_bits_used` is the sum over code dimensions of the "
                  "entropy (bits) of the rounded bit across the test set: an upper bound on the information the binary "
                  "codes carry. `code_nll_*` is -log p(x | decoder mean) per image (nats) from the continuous "
                  "posterior mean and from the code rounded to {0, 1}.\n")
        return Result(metrics, [figure], report)

    @classmethod
    def aggregate(cls, folder: Path, study_runs: Sequence[StudyRun]) -> Result | None:
        """Histograms of every run's posterior-mean codes (``codes_histogram.png``) and one table of them."""
        found = [r for r in study_runs if (r.run_dir / CODES).is_file()]
        if not found:
            return None
        fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.2), squeeze=False)
        rows = []
        for ax, r in zip(axes.flat, found):
            with np.load(r.run_dir / CODES) as f:
                z, unit = f["z"], bool(f["unit_interval"])
            m = runs.read_json(r.run_dir / runs.METRICS)
            rows.append({"run": r.label} | {c: m.get(c) for c in COLUMNS})
            ax.hist(z, bins=50, range=(0, 1) if unit else (-0.25, 1.25), color="tab:blue")
            ax.set_title(f"{r.label}: {100 * m['code_share_near_0_or_1']:.0f}% within 0.05 of 0 or 1", fontsize=9)
            ax.set_xlabel("posterior mean of the code (all test images and dimensions)")
        fig.tight_layout()
        figure = plots.save(fig, folder / "codes_histogram.png", tight=False)
        return Result(figures=[figure], report=tables.records(rows, ["run", *COLUMNS]))
