"""Evaluation of a trained pair: the numbers papers report, for any model/guide pair.

The test log-likelihood is the IWAE bound with k importance samples, computed in chunks
of data points and of samples (a running logsumexp), so memory stays bounded for k in
the thousands. Everything works from Pyro traces of sites ``z`` and ``x``, so user pairs
need no extra methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import poutine

from ppvae.importance import log_weights, max_plate_nesting

ELEMENT_BUDGET = 2**25  # floats alive per chunk (k * points * pixels): about 128 MB in float32


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def chunk_sizes(n_points: int, k: int, x_dim: int, chunk_size: int = 0) -> tuple[int, int]:
    """(data points per batch, samples per chunk) keeping k * points * x_dim under the budget."""
    per_sample = max(1, x_dim)
    if chunk_size:
        k_chunk = min(k, chunk_size)
    else:
        k_chunk = max(1, min(k, ELEMENT_BUDGET // (per_sample * min(n_points, 100))))
    points = max(1, min(n_points, ELEMENT_BUDGET // (per_sample * k_chunk)))
    return points, k_chunk


@torch.no_grad()
def log_likelihood(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   k: int = 1000, chunk_size: int = 0, keep_log_weights: bool = False) -> dict[str, torch.Tensor]:
    """IWAE_k estimate of log p(x) per data point, plus the single-sample ELBO split.

    Returns ``ll`` [N] (IWAE_k bound), ``elbo`` [N], ``recon`` [N] (E_q log p(x|z)),
    ``kl`` [N] (Monte Carlo E_q[log q - log p(z)]), all averaged over the k samples, and,
    with ``keep_log_weights``, ``log_w`` [N, k] for diagnostics.
    """
    n = x.shape[0]
    nesting = max_plate_nesting(model, guide, x[:1], None if y is None else y[:1])
    points, k_chunk = chunk_sizes(n, k, x[0].numel(), chunk_size)
    out: dict[str, list] = {"ll": [], "elbo": [], "recon": [], "kl": [], "log_w": []}
    for rows in _chunks(n, points):
        xb, yb = x[rows], None if y is None else y[rows]
        running = torch.full((xb.shape[0],), -math.inf, device=x.device)
        sums = torch.zeros(3, xb.shape[0], device=x.device)
        kept = []
        for ks in _chunks(k, k_chunk):
            lw = log_weights(model, guide, xb, yb, k=ks.stop - ks.start, nesting=nesting)
            log_w = lw.log_w + lw.global_[:, None]
            running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
            sums += torch.stack([log_w.sum(0), lw.obs.sum(0), -lw.latent.sum(0)])
            if keep_log_weights:
                kept.append(log_w.T)
        out["ll"].append(running - math.log(k))
        for key, value in zip(("elbo", "recon", "kl"), sums / k):
            out[key].append(value)
        if keep_log_weights:
            out["log_w"].append(torch.cat(kept, 1))
    return {key: torch.cat(v) for key, v in out.items() if v}


@torch.no_grad()
def posterior_mean(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E_q[z|x] read off the guide's ``z`` site (its distribution's mean)."""
    site = poutine.trace(guide).get_trace(x, y).nodes["z"]
    try:
        return site["fn"].mean
    except NotImplementedError:  # a family without a closed-form mean: average samples
        return torch.stack([poutine.trace(guide).get_trace(x, y).nodes["z"]["value"] for _ in range(64)]).mean(0)


@torch.no_grad()
def decode_mean(model: Callable, z: torch.Tensor, x_template: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z] from the model's ``x`` site with ``z`` fixed (works for any pair)."""
    x = x_template[:1].expand((z.shape[0],) + x_template.shape[1:])
    tr = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x, y)
    return tr.nodes["x"]["fn"].mean


@torch.no_grad()
def prior_samples(model: Callable, x_template: torch.Tensor, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean images E[x|z] for z drawn from the prior (the usual "samples" figure)."""
    x = x_template[:1].expand((n,) + x_template.shape[1:])
    tr = poutine.trace(poutine.uncondition(model)).get_trace(x, y)
    return tr.nodes["x"]["fn"].mean


@torch.no_grad()
def evaluate(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *,
             k: int = 1000, chunk_size: int = 0) -> dict[str, float]:
    """Summary metrics (nats per example) for ``metrics.json``."""
    res = log_likelihood(model, guide, x, y, k=k, chunk_size=chunk_size)
    z = posterior_mean(guide, x, y)
    recon = decode_mean(model, z, x, y)
    n = x.shape[0]
    return {
        "test_ll": res["ll"].mean().item(),
        "test_ll_se": (res["ll"].std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "test_nll": -res["ll"].mean().item(),
        "test_elbo": res["elbo"].mean().item(),
        "test_recon_loglik": res["recon"].mean().item(),
        "test_kl": res["kl"].mean().item(),
        "test_recon_mse": ((recon.reshape(n, -1) - x.reshape(n, -1)) ** 2).mean().item(),
        "eval_k": k,
        "eval_points": n,
    }
