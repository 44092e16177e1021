"""``ppvae sample``: images from a trained run's prior or aggregate posterior, and their sample quality."""

from __future__ import annotations

from pathlib import Path

import pyro

from ppvae import plots, runs
from ppvae.analyses.sample_quality import sample_quality
from ppvae.errors import ConfigError
from ppvae.evaluation.sampling import (
    DEFAULT_COMPONENTS,
    decode,
    draw_latents,
    elbo_surgery,
    fit_aggregate,
    kl_to_prior,
)
from ppvae.nn import eval_mode
from ppvae.sites import posterior_means
from ppvae.studies.run import evaluated_checkpoint, load_run


def sample_run(run_dir: Path | str, source: str = "prior", n: int = 64, components: int = DEFAULT_COMPONENTS,
               seed: int = 0, quality: int = 0, trust: bool = False) -> dict:
    """``ppvae sample``: decode n samples of a trained run (the parameters its evaluation scored) from
    ``source`` into ``samples-SOURCE.png`` (plus an uncertainty map with a per-pixel sigma); for ``aggregate``
    also KL(mixture || prior) and the aggregate posterior's own KL with the mutual information
    (:func:`elbo_surgery`).
    With ``quality`` > 0, the sample-quality distance of that many samples to as many test images."""
    run_dir = Path(run_dir)
    cfg, data, trainer, _ = load_run(run_dir, trust=trust)
    if cfg.model.conditional:
        raise ConfigError("ppvae sample draws unconditional samples; this run is a conditional VAE "
                          "(model.conditional).")
    evaluated_checkpoint(cfg, run_dir, trainer, data)  # the parameters (and fitted sigma) evaluation scored
    with eval_mode(trainer.model, trainer.guide):  # batch-norm running statistics, clean encoder inputs
        model, guide = trainer.model, trainer.guide
        pyro.set_rng_seed(seed)
        out: dict = {"source": source, "n": n}
        mixture = None
        if source == "aggregate":
            mixture = fit_aggregate(posterior_means(guide, data.train_x, data.train_y), components, seed)
            out["components"] = components
            out["kl_mixture_prior"], out["kl_mixture_prior_se"] = kl_to_prior(mixture, model, data.train_x)
            out |= elbo_surgery(model, guide, data.train_x, data.train_y)
        mean, sigma = decode(model, draw_latents(source, n, model, data.train_x, mixture), data.train_x)
        out["grid"] = plots.image_grid(mean.cpu().numpy(), data.image_shape, run_dir / f"samples-{source}.png",
                                       title=f"samples from the {source} (means)")
        if sigma is not None:
            out["uncertainty"] = plots.image_rows(
                [("mean", mean[:16].cpu().numpy(), False), ("sigma", sigma[:16].cpu().numpy(), True)],
                data.image_shape, run_dir / f"uncertainty-{source}.png",
                title=f"samples from the {source}: mean and per-pixel sigma")
        if quality:
            out |= sample_quality(model, data, quality, sources=(source,), mixture=mixture)
        runs.write_json(run_dir / f"samples-{source}.json", out)
        return out


__all__ = ["sample_run"]
