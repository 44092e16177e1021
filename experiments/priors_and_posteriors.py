"""The priors-and-posteriors study, plus the analyses a results table cannot hold.

    python -m ppvae.experiments.priors_and_posteriors --scale small [--out runs] [--results DIR] [overrides ...]

1. Runs the study ``priors_and_posteriors`` (``experiments/priors_and_posteriors.toml``): one
   run per prior / guide / weights variant, same architecture, estimator, budget and seed.
2. Trains the Bayesian decoder once more, started from the point-estimate run (MAP init).
3. Codes on (0, 1) (Beta/Beta, Beta/Kumaraswamy, 0-1 mixture): histogram of posterior means,
   reconstructions from the codes rounded to exactly binary vectors, bits per image and the
   reconstruction error of binary against continuous codes.
4. Bayesian against point-estimate decoder: an S x N matrix of pointwise test log-likelihoods
   (IWAE over z with the weights fixed at each of S draws from q(W)), the posterior-predictive
   NLL, ArviZ's LOO comparison, and the same z decoded under several weight draws.
5. Writes ``analysis.md`` and the figures into the study folder (and, with ``--results``, copies
   the table, the analysis and the key figures there).

For a Bayesian decoder, ``metrics.json`` (``ppvae.evaluate``) draws the weights from q(W) once
per tile of 32 importance samples; the S x N matrix here holds each of S draws fixed over all
k samples, so its ``logmeanexp`` over draws is the predictive estimate with the most draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from ppvae import diagnostics, experiment, plots, runs, study  # noqa: E402
from ppvae.evaluate import decode_mean, posterior_mean  # noqa: E402
from ppvae.guides.bayesian import decode_weight_draws, pointwise_log_likelihood  # noqa: E402

NAME = "priors_and_posteriors"
UNIT_CODES = ["beta_beta", "beta_kumaraswamy", "mixture01"]
BAYESIAN = ["bayesian", "bayesian_map"]
# weight draws S, importance samples k and test points for the pointwise log-likelihood matrix
POINTWISE = {"smoke": (30, 20, 0), "small": (100, 100, 0), "reduced": (20, 100, 200), "full": (100, 200, 1000)}


def _load(folder: Path):
    """A run's test images (as many as it evaluated), trained model and guide, and image shape."""
    cfg, data, trainer, _ = experiment.load_run(folder)
    n = cfg.eval.num_test or data.test_x.shape[0]
    return data.test_x[:n], trainer.model, trainer.guide, data.image_shape


def _bernoulli_nll(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """-log p(x | mean) per image for binary x (nats)."""
    p = mean.clamp(1e-6, 1 - 1e-6)
    return -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1)


@torch.no_grad()
def binary_codes(label: str, folder: Path, out: Path) -> dict:
    """Posterior-mean codes on (0, 1), how binary they are, and what rounding them to bits costs.

    With the Beta prior the latent is logit(code) and the code mean is E_q[sigmoid(z)]; with
    the 0-1 mixture prior the latent is the code itself.
    """
    x, model, guide, image_shape = _load(folder)
    logit_codes = getattr(model.prior, "decoder_input", None) is not None
    if logit_codes:
        z = guide.posterior(x).base_dist.code_mean
        latent = torch.logit  # bits 0 and 1 become -inf and inf, which the decoder's sigmoid maps back exactly
    else:
        z = posterior_mean(guide, x)
        latent = lambda c: c  # noqa: E731
    z_bits = (z > 0.5).to(z.dtype)
    recon, recon_bits = decode_mean(model, latent(z), x), decode_mean(model, latent(z_bits), x)
    p_one = z_bits.double().mean(0)
    entropy = -(torch.special.xlogy(p_one, p_one) + torch.special.xlogy(1 - p_one, 1 - p_one)) / math.log(2)
    grid = torch.cat([x[:12], recon[:12], recon_bits[:12]]).cpu().numpy()
    plots.image_grid(grid, image_shape, out / f"binary_codes_{label}.png", rows=3,
                     title=f"{label}: data / continuous code / code rounded to bits",
                     row_labels=["data", "E_q code", "bits"])
    return {
        "z": z.flatten().cpu().numpy(),
        "share_within_0.05_of_0_or_1": float((torch.minimum(z.abs(), (1 - z).abs()) < 0.05).double().mean()),
        "bits_per_image": int(z.shape[1]),
        "bits_used": float(entropy.sum()),
        "distinct_codes": int(torch.unique(z_bits, dim=0).shape[0]),
        "images": int(x.shape[0]),
        "nll_continuous": float(_bernoulli_nll(x, recon).mean()),
        "nll_bits": float(_bernoulli_nll(x, recon_bits).mean()),
        "mse_continuous": float(((recon - x) ** 2).mean()),
        "mse_bits": float(((recon_bits - x) ** 2).mean()),
    }


def code_histograms(codes: dict[str, dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(codes), figsize=(4.2 * len(codes), 3.2), squeeze=False)
    for ax, (label, c) in zip(axes.flat, codes.items()):
        ax.hist(c["z"], bins=50, range=(-0.25, 1.25) if label == "mixture01" else (0, 1), color="tab:blue")
        ax.set_title(f"{label}: {100 * c['share_within_0.05_of_0_or_1']:.0f}% within 0.05 of 0 or 1", fontsize=9)
        ax.set_xlabel("posterior mean of the code (all test images and dimensions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def bayesian_against_point(folders: dict[str, Path], scale: str, out: Path, seed: int) -> dict:
    """Pointwise test log-likelihoods under weight draws, predictive NLL, ArviZ comparison, figures."""
    draws, k, points = POINTWISE[scale]
    matrices, summary, loaded = {}, {}, {}
    for label, folder in folders.items():
        pyro.set_rng_seed(seed)
        x, model, guide, image_shape = _load(folder)
        x = x[:points] if points else x
        loaded[label] = (x, model, guide, image_shape)
        start = time.perf_counter()
        ll = pointwise_log_likelihood(model, guide, x, draws=draws, k=k).double()
        matrices[label] = ll.cpu().numpy()
        predictive = torch.logsumexp(ll, 0) - math.log(draws)
        summary[label] = {"predictive_nll": float(-predictive.mean()),
                          "predictive_nll_se": float(predictive.std() / math.sqrt(len(predictive))),
                          "nll_single_draw": float(-ll.mean()),
                          "seconds": time.perf_counter() - start}
        metrics = runs.read_json(folder / runs.METRICS)
        summary[label] |= {key: metrics.get(key) for key in ("test_nll", "weight_kl_per_example", "weight_sd_mean")}
    rows, khat = diagnostics.compare_pointwise(matrices)
    for label, k_hat in khat.items():
        summary[label]["loo_khat_share_above_0_7"] = float((k_hat > diagnostics.KHAT_GOOD).mean())
    weight_draw_figure(loaded, out / "weight_draws.png")
    return {"summary": summary, "compare": rows, "draws": draws, "k": k, "points": len(loaded["normal"][0])}


def weight_draw_figure(loaded: dict, path: Path, images: int = 10, draws: int = 6) -> Path:
    """One z per column (the Bayesian guide's posterior mean of a test image), decoded by the point
    decoder, the Bayesian decoder's mean weights and several weight draws; last row: per-pixel sd
    over 50 draws (scaled to the row's maximum)."""
    x, model, guide, image_shape = loaded["bayesian"]
    x = x[:images]
    z = posterior_mean(guide, x)
    _, point_model, point_guide, _ = loaded["normal"]
    rows = [x, decode_mean(point_model, posterior_mean(point_guide, x), x), decode_mean(model, z, x)]
    sampled = decode_weight_draws(model, guide, z, x, draws=50)
    rows += list(sampled[:draws])
    sd = sampled.std(0)
    rows.append(sd / sd.max())
    labels = ["data", "point", "mean W", *[f"W draw {i + 1}" for i in range(draws)], "sd (scaled)"]
    return plots.image_grid(torch.cat(rows).cpu().numpy(), image_shape, path, rows=len(rows),
                            title="the same z under the point decoder, mean weights and weight draws",
                            row_labels=labels)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.4g}"
    return "" if v is None else str(v)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]


def write_analysis(study_dir: Path, scale: str, command: str, rows: list[dict], columns: list[str], codes: dict,
                   bayes: dict, seconds: float, base: dict) -> Path:
    lines = [f"# {NAME} ({scale} scale)", "", f"Command: `{command}`", "",
             f"Data `{base['data']}`, latent size {base['latent_dim']}, decoder/encoder {base['hidden']} "
             f"{base['activation']}, estimator `{base['estimator']}`, {base['optimizer']} lr {base['lr']}, "
             f"batch {base['batch_size']}, {base['epochs']} epochs per run, seed {base['seed']}, "
             f"test log-likelihood with k = {base['k']} on {base['num_test'] or 'all'} test images. "
             f"Wall time of the whole study: {seconds / 60:.1f} min on {base['device']}.", "",
             "## Every variant", "", *_table(rows, ["run", *columns]), "",
             "`bayesian_map` starts from the `normal` run's decoder (posterior means) and encoder. For the "
             "Bayesian rows `test_nll` and `test_elbo` are predictive (weights drawn from q(W), not weighted); "
             "`final_train_loss` includes the weights' KL per training example (`weight_kl_per_example` below).",
             "",
             "## Codes on (0, 1): how binary are they?", "",
             "![posterior means](codes_histogram.png)", "",
             *_table([{"run": label} | {k: v for k, v in c.items() if k != "z"} for label, c in codes.items()],
                     ["run", "share_within_0.05_of_0_or_1", "bits_per_image", "bits_used", "distinct_codes",
                      "images", "nll_continuous", "nll_bits", "mse_continuous", "mse_bits"]), "",
             "`bits_used` is the sum over code dimensions of the entropy (bits) of the rounded bit across the "
             "test set: an upper bound on the information the binary codes carry. `nll_*` is -log p(x | decoder "
             "mean) per image (nats) from the continuous posterior mean and from the code rounded to {0, 1}.", "",
             *[f"![{label}](binary_codes_{label}.png)" for label in codes], "",
             "## Bayesian decoder against the point estimate", "",
             f"S = {bayes['draws']} weight draws from q(W), IWAE with k = {bayes['k']} per draw, "
             f"{bayes['points']} test images. `predictive_nll` = -mean_n log (1/S) sum_s p(x_n | W_s); "
             "`nll_single_draw` = the mean over draws of -log p(x_n | W_s). The point decoder's S rows "
             "differ only by the importance samples.", "",
             *_table([{"run": label} | s for label, s in bayes["summary"].items()],
                     ["run", "predictive_nll", "predictive_nll_se", "nll_single_draw", "test_nll",
                      "weight_kl_per_example", "weight_sd_mean", "loo_khat_share_above_0_7"]), "",
             "ArviZ `compare` (PSIS-LOO over the S draws of each decoder's S x N test log-likelihood, relative "
             "efficiency 1). On held-out images the LOO correction `p_loo` measures how much single weight "
             "draws matter; `elpd_loo` is then a conservative version of the held-out log predictive density.", "",
             *_table(bayes["compare"], ["model", "rank", "elpd_loo", "p_loo", "elpd_diff", "se", "dse", "weight",
                                        "warning"]), "",
             "![weight draws](weight_draws.png)", ""]
    path = study_dir / "analysis.md"
    runs.write_bytes_atomic(path, "\n".join(lines).encode())
    return path


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="small", choices=sorted(POINTWISE))
    p.add_argument("--out", default="runs")
    p.add_argument("--results", default="", help="also copy the table, analysis and key figures into this folder")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    command = " ".join(["python -m ppvae.experiments.priors_and_posteriors", f"--scale {args.scale}", *args.overrides])
    start = time.perf_counter()
    study_dir = study.run(NAME, args.scale, args.overrides, out=args.out)
    rows = list(_read_csv(study_dir / "results.csv"))
    folders = {r["run"]: study_dir / r["folder"] for r in rows}
    planned = dict(study.configs(study.read(NAME), args.scale, args.overrides))
    cfg = planned["bayesian"]
    cfg = dataclasses.replace(cfg, name=f"{NAME}-bayesian_map",
                              model=dataclasses.replace(cfg.model, weight_init=str(folders["normal"])))
    folders["bayesian_map"] = experiment.run(cfg, out=study_dir)
    columns = study.read(NAME).columns
    metrics = runs.read_json(folders["bayesian_map"] / runs.METRICS)
    rows.append({"run": "bayesian_map", "folder": folders["bayesian_map"].name} | {c: metrics.get(c) for c in columns})
    for r in rows:
        r |= {c: _number(r.get(c)) for c in columns}
    codes = {label: binary_codes(label, folders[label], study_dir) for label in UNIT_CODES}
    code_histograms(codes, study_dir / "codes_histogram.png")
    bayes = bayesian_against_point({label: folders[label] for label in ["normal", *BAYESIAN]}, args.scale,
                                   study_dir, cfg.train.seed)
    base_cfg = planned["normal"]
    base = {"data": base_cfg.data.name, "latent_dim": base_cfg.model.latent_dim, "hidden": base_cfg.model.decoder.hidden,
            "activation": base_cfg.model.decoder.activation, "estimator": base_cfg.estimator.name,
            "optimizer": base_cfg.train.optimizer, "lr": base_cfg.train.lr, "batch_size": base_cfg.train.batch_size,
            "epochs": base_cfg.train.epochs, "seed": base_cfg.train.seed, "k": base_cfg.eval.k,
            "num_test": base_cfg.eval.num_test, "device": runs.read_json(folders["normal"] / runs.METRICS)["device"]}
    analysis = write_analysis(study_dir, args.scale, command, rows, columns, codes, bayes,
                              time.perf_counter() - start, base)
    runs.write_json(study_dir / "analysis.json", {"codes": {k: {n: v for n, v in c.items() if n != "z"}
                                                            for k, c in codes.items()}, "bayesian": bayes})
    if args.results:
        dest = Path(args.results)
        dest.mkdir(parents=True, exist_ok=True)
        figures = ["codes_histogram.png", "weight_draws.png", *[f"binary_codes_{label}.png" for label in UNIT_CODES],
                   "curves.png"]
        for name in ["analysis.md", "analysis.json", "results.md", "results.csv", *figures]:
            shutil.copy2(study_dir / name, dest / name)
    print(f"study folder: {study_dir}")
    print(f"analysis:     {analysis}")
    return study_dir


def _read_csv(path: Path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def _number(v):
    if v in (None, "", "None"):
        return None
    try:
        return json.loads(v) if isinstance(v, str) else v
    except ValueError:
        return v


if __name__ == "__main__":
    main()
