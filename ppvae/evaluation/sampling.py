"""Generating images: from the prior, or from the aggregate posterior, and per-pixel uncertainty maps.

A VAE's prior p(z) and its aggregate posterior q(z) = 1/N sum_n q(z|x_n) rarely agree: the
decoder was trained only where q(z) has mass, so prior samples that land in the holes of
q(z) decode to poor images. The aggregate sampler fits a Gaussian mixture (scikit-learn's
``GaussianMixture``, full covariances) to the posterior means of the training set, turns it
into a Pyro ``MixtureSameFamily`` and decodes its samples. KL(mixture || prior) is that
sampler's distance to the prior (Monte Carlo); it ignores the posterior variances, so it is not
the aggregate posterior's KL, which :func:`elbo_surgery` computes (with the mutual information).

Everything reads the sites ``z`` and ``x`` of the pair, so user pairs work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine

from ppvae import plots
from ppvae.data import Dataset
from ppvae.errors import DataError
from ppvae.sites import LATENT, OBSERVED, model_site, posterior_mean, prior_draws, upper_local_latents

DEFAULT_COMPONENTS = 32
SOURCES = ("prior", "aggregate")


def fit_aggregate(z: torch.Tensor, components: int = DEFAULT_COMPONENTS, seed: int = 0) -> dist.MixtureSameFamily:
    """A K-component full-covariance Gaussian mixture fit by EM to latent codes ``z`` [N, d].

    The Cholesky factors are taken in float64 (posterior means of inactive units have tiny
    variance, which float32 factorization can reject) and the mixture lives on ``z``'s device.
    """
    if components > z.shape[0]:
        raise DataError(f"A {components}-component mixture cannot be fitted to {z.shape[0]} latent codes; use at "
                        f"most {z.shape[0]} components.")
    from sklearn.mixture import GaussianMixture  # here: importing scikit-learn costs a second every command

    gmm = GaussianMixture(n_components=components, covariance_type="full", random_state=seed)
    gmm.fit(z.detach().cpu().double().numpy())
    as_tensor = lambda a: torch.as_tensor(a, dtype=z.dtype, device=z.device)  # noqa: E731
    return dist.MixtureSameFamily(
        dist.Categorical(probs=as_tensor(gmm.weights_)),
        dist.MultivariateNormal(as_tensor(gmm.means_), scale_tril=as_tensor(np.linalg.cholesky(gmm.covariances_))),
    )


def base_of(fn: dist.Distribution) -> dist.Distribution:
    """The distribution inside an ``Independent`` wrapper (``fn`` itself otherwise)."""
    return fn.base_dist if isinstance(fn, torch.distributions.Independent) else fn


def normal_parts(fn: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(loc, scale), expanded to the batch shape, of a diagonal Normal (Normal or Independent(Normal)); else None."""
    base = base_of(fn)
    if not isinstance(base, torch.distributions.Normal):
        return None
    return base.loc.expand(base.batch_shape), base.scale.expand(base.batch_shape)


def prior_log_prob(model: Callable, z: torch.Tensor, x_template: torch.Tensor,
                   y: torch.Tensor | None = None) -> torch.Tensor:
    """log p(z) per row of ``z``, read off the model's ``z`` site."""
    return model_site(model, LATENT, z, x_template, y).log_prob(z)


@torch.no_grad()
def kl_to_prior(mixture: dist.Distribution, model: Callable, x_template: torch.Tensor, n: int = 10_000,
                y: torch.Tensor | None = None) -> tuple[float, float]:
    """Monte Carlo KL(mixture || prior) = E_mixture[log m(z) - log p(z)] with n draws: (estimate, standard error)."""
    z = mixture.sample((n,))
    diff = mixture.log_prob(z) - prior_log_prob(model, z, x_template, y)
    return diff.mean().item(), (diff.std() / math.sqrt(n)).item()


@torch.no_grad()
def decode(model: Callable, z: torch.Tensor, x_template: torch.Tensor,
           y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(E[x|z], per-pixel sigma) from the model's ``x`` site with z fixed.

    The sigma is returned only when p(x|z) is Gaussian with a scale that varies over pixels
    (a per-pixel head, or K&W's mean/log-variance decoder); a global or fixed sigma gives None.
    """
    fn = model_site(model, OBSERVED, z, x_template, y)
    mean, parts = fn.mean.reshape(z.shape[0], -1), normal_parts(fn)
    if parts is None:
        return mean, None
    sigma = parts[1].reshape(z.shape[0], -1)
    return mean, (sigma if bool((sigma != sigma[:, :1]).any()) else None)


def draw_latents(source: str, n: int, model: Callable, x_template: torch.Tensor,
                 mixture: dist.Distribution | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """n latent codes from ``source``: ``prior`` or ``aggregate`` (needs the fitted ``mixture``)."""
    if source == "prior":
        return prior_draws(model, x_template, n, y)
    if source == "aggregate":
        if mixture is None:
            raise ValueError("source 'aggregate' samples a fitted mixture: pass fit_aggregate(codes)")
        return mixture.sample((n,))
    raise ValueError(f"source must be one of {SOURCES}, not {source!r}")


def has_pixel_sigma(model: Callable, guide: Callable, data: Dataset) -> bool:
    """Whether the pair's p(x|z) currently predicts a per-pixel sigma (see :func:`decode`)."""
    x, y = data.test_x[:2], None if data.test_y is None else data.test_y[:2]
    return decode(model, posterior_mean(guide, x, y), x, y)[1] is not None


def uncertainty_figures(model: Callable, guide: Callable, data: Dataset, run_dir: Path, n: int = 16) -> list[Path]:
    """Mean images beside their predicted per-pixel sigma, for test reconstructions and for prior
    samples; none when p(x|z) has no per-pixel sigma (``ppvae sample`` draws aggregate samples)."""
    if not has_pixel_sigma(model, guide, data):
        return []
    x, y = data.test_x[:n], None if data.test_y is None else data.test_y[:n]
    shape, np_ = data.image_shape, lambda t: t.cpu().numpy()  # noqa: E731
    mean, sigma = decode(model, posterior_mean(guide, x, y), x, y)
    recon = plots.image_rows([("data", np_(x), False), ("mean", np_(mean), False), ("sigma", np_(sigma), True)],
                             shape, run_dir / "uncertainty_reconstructions.png",
                             title="test reconstructions: mean and predicted per-pixel sigma")
    mean, sigma = decode(model, prior_draws(model, x, n, y), x, y)
    samples = plots.image_rows([("mean", np_(mean), False), ("sigma", np_(sigma), True)], shape,
                               run_dir / "uncertainty_samples.png",
                               title="samples from the prior: mean and predicted per-pixel sigma")
    return [recon, samples]


DENSITY_BUDGET = 2**24  # log-density terms (points z x data points x latent dimensions) alive at once: 64 MB


@torch.no_grad()
def aggregate_log_density(guide: Callable, x: torch.Tensor, z: torch.Tensor,
                          y: torch.Tensor | None = None) -> torch.Tensor:
    """log q(z) = log 1/N sum_n q(z|x_n) at the points ``z`` [G, d], from the guide's ``z`` site, over
    batches of data points sized to ``DENSITY_BUDGET``."""
    batch_size = max(1, DENSITY_BUDGET // (z.shape[0] * max(1, z[0].numel())))
    total = torch.full((z.shape[0],), -math.inf, device=z.device)
    for i in range(0, x.shape[0], batch_size):
        yb = None if y is None else y[i:i + batch_size]
        q = poutine.trace(guide).get_trace(x[i:i + batch_size], yb).nodes[LATENT]["fn"]
        total = torch.logaddexp(total, torch.logsumexp(q.log_prob(z[:, None, :]), dim=1))
    return total - math.log(x.shape[0])


@torch.no_grad()
def elbo_surgery(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None,
                 points: int = 10_000) -> dict[str, float | int | None]:
    """The ELBO's average KL split into the mutual information and the aggregate posterior's own KL
    (Hoffman & Johnson 2016): E_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)), with
    q(z) = 1/M sum_n q(z|x_n) over the first M = ``points`` rows of ``x`` and one draw z_n ~ q(z|x_n)
    each, so ``kl_aggregate_prior`` cannot exceed the average KL (up to its standard error) and
    ``mutual_information`` cannot exceed log M: where the posteriors barely overlap, I_q reaches
    log M and the aggregate KL takes the rest (an upper estimate then; ``mi_at_bound`` says so).
    This is the KL of the aggregate posterior itself, variances included, unlike
    ``kl_mixture_prior`` (of a mixture fit to the posterior means). None for a point-mass guide,
    whose log q is not a density, under a second stochastic layer, where p(z) is conditional, and for
    a q whose density does not broadcast over other points' codes (an IAF flow conditioned on x)."""
    x, y = x[:points], None if y is None else y[:points]
    trace = poutine.trace(guide).get_trace(x, y)
    tr = trace.nodes[LATENT]
    z = tr["value"]
    none = {"kl_avg_posterior_prior": None, "kl_aggregate_prior": None, "kl_aggregate_prior_se": None,
            "mutual_information": None, "mutual_information_se": None, "surgery_points": x.shape[0],
            "mi_at_bound": None}
    log_q = tr["fn"].log_prob(z)
    try:
        log_agg = aggregate_log_density(guide, x, z, y)
    except torch.cuda.OutOfMemoryError:  # a RuntimeError too, but not "not applicable": say so
        return none | {"surgery_note": f"out of memory at {x.shape[0]} points: not measured"}
    except RuntimeError:  # a q whose density does not broadcast over other points' z (a conditioned flow)
        return none
    log_p = prior_log_prob(model, z, x, y)
    avg, agg, mi = log_q - log_p, log_agg - log_p, log_q - log_agg
    if (upper_local_latents(trace) or isinstance(base_of(tr["fn"]), dist.Delta)
            or not bool(torch.isfinite(avg).all() & torch.isfinite(agg).all())):
        return none
    se = lambda t: (t.std() / math.sqrt(t.numel())).item()  # noqa: E731
    return {"kl_avg_posterior_prior": avg.mean().item(), "kl_aggregate_prior": agg.mean().item(),
            "kl_aggregate_prior_se": se(agg), "mutual_information": mi.mean().item(),
            "mutual_information_se": se(mi), "surgery_points": x.shape[0],
            "mi_at_bound": bool(mi.mean().item() > math.log(x.shape[0]) - 0.1)}


UNIT_KL_THRESHOLD = 0.01  # nats per point: a unit carrying less says next to nothing about x


def units_holding(per_unit: list[float], share: float) -> int:
    """The fewest units whose KLs add up to ``share`` of the total: a count without an absolute threshold,
    which tells a code spread thinly over many units (each above any small threshold) from a few strong ones."""
    kl = sorted(per_unit, reverse=True)
    total, running = sum(kl), 0.0
    for count, value in enumerate(kl, 1):
        running += value
        if running >= share * total:
            return count
    return len(kl)


@torch.no_grad()
def collapse_diagnostics(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None,
                         points: int = 2000) -> dict:
    """Posterior collapse on the test points, for ``metrics.json``: the KL of each latent unit (closed
    form, for a diagonal Normal guide and prior; None otherwise), how many carry more than
    ``UNIT_KL_THRESHOLD`` nats, and the ELBO split of :func:`elbo_surgery` over the first ``points``.
    Burda's ``active_units`` counts units whose posterior mean moves with x (variance > 0.01); a unit
    can move a little and carry almost no KL, which the per-unit KL shows."""
    x, y = x[:points], None if y is None else y[:points]
    site = poutine.trace(guide).get_trace(x, y).nodes[LATENT]
    q, p = normal_parts(site["fn"]), normal_parts(model_site(model, LATENT, site["value"], x, y))
    per_unit = None
    if q is not None and p is not None:
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(*q), torch.distributions.Normal(*p))
        per_unit = kl.reshape(x.shape[0], -1).mean(0).tolist()
    split = elbo_surgery(model, guide, x, y, points)
    return {"test_kl_per_unit": per_unit,
            "test_units_carrying_kl": None if per_unit is None else sum(v > UNIT_KL_THRESHOLD for v in per_unit),
            "test_units_for_90pct_kl": None if per_unit is None else units_holding(per_unit, 0.9),
            "test_mutual_information": split["mutual_information"],
            "test_kl_aggregate_prior": split["kl_aggregate_prior"], "test_mi_at_bound": split["mi_at_bound"]}


DENSITY_COLUMNS = ("prior p(z)", "aggregate posterior q(z)", "mixture fit to the posterior means")


def density_panels(model: Callable, guide: Callable, data: Dataset, mixture: dist.Distribution,
                   limit: float = 4.0, resolution: int = 120, max_points: int = 5000) -> np.ndarray:
    """Log densities of the prior, the aggregate posterior (exact, over up to ``max_points`` training
    points) and its mixture fit on a [-limit, limit]^2 grid, for unconditional pairs with a 2-D latent:
    ``[3, resolution, resolution]`` indexed [panel, z2, z1]."""
    axis = torch.linspace(-limit, limit, resolution, device=data.train_x.device)
    zz = torch.cartesian_prod(axis, axis).flip(-1)  # z1 varies fastest, so a reshape gives [z2, z1]
    x = data.train_x[:max_points]
    panels = [prior_log_prob(model, zz, x), aggregate_log_density(guide, x, zz), mixture.log_prob(zz)]
    return torch.stack(panels).reshape(3, resolution, resolution).cpu().numpy()


def density_figure(panels: Sequence[np.ndarray], labels: Sequence[str], path: Path, limit: float = 4.0) -> Path:
    """One row of :func:`density_panels` per run (e.g. per sigma)."""
    return plots.log_density_grid((-limit, limit, -limit, limit), panels, labels, DENSITY_COLUMNS, path,
                                  title="log densities in the 2-D latent space")


__all__ = ["DEFAULT_COMPONENTS", "SOURCES", "fit_aggregate", "base_of", "normal_parts", "prior_log_prob",
           "kl_to_prior", "decode", "draw_latents", "has_pixel_sigma", "uncertainty_figures", "DENSITY_BUDGET",
           "aggregate_log_density", "elbo_surgery", "UNIT_KL_THRESHOLD", "units_holding", "collapse_diagnostics",
           "density_panels", "density_figure"]
