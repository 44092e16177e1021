"""Sample quality: Frechet distance between generated and real test images in a classifier's feature space.

**This is not the Inception FID.** The features are the 64-unit penultimate layer of a small
CNN classifier that ppvae trains on the run's own training set (two stride-2 convolutions and
one hidden layer), so the numbers compare models *within* this suite and dataset only; they
are not comparable with FIDs published for any dataset. The classifier is trained once per
dataset (deterministically, with its own seed) and cached under ``$PPVAE_CACHE`` (default
``~/.cache/ppvae``) in ``feature_nets/``.

Both distances are torchmetrics' ``FrechetInceptionDistance`` (statistics accumulated in float64,
``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``): for ``fd_*`` with the classifier as its
custom feature extractor (:class:`ClassifierFeatures`), so only the formula is torchmetrics' and the
features stay ppvae's.

The standard FID (InceptionV3 pool features, 2048-D: torchmetrics' default extractor, which is
torch-fidelity's) is added only where the ``torch_fidelity`` package and its InceptionV3 weights
file are already on the machine (``$PPVAE_INCEPTION_WEIGHTS``, or
``weights-inception-2015-12-05-6726825d.pth`` in the torch hub cache); ppvae never downloads them
(the file's path is given to torchmetrics). Grey images are rounded to uint8, repeated to three
channels and upsampled to 299x299 with torch-fidelity's TensorFlow-compatible bilinear resize
(torchmetrics' ``antialias=False``), as the original FID does. Metric names say which is which:
``fd_*`` (classifier features) and ``fid_inception_*`` (standard FID).

Generated images are decoded means, clipped to [0, 1] like the test images.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppvae import registry, runs, tables
from ppvae.analyses.base import Analysis, Result, RunContext, StudyRun
from ppvae.data import Dataset
from ppvae.data.files import cache_root
from ppvae.errors import DataError
from ppvae.evaluation.sampling import (
    SOURCES,
    decode,
    density_figure,
    density_panels,
    draw_latents,
    elbo_surgery,
    kl_to_prior,
)
from ppvae.registry import Param
from ppvae.rng import own_stream

FEATURES = 64
VERSION = 1  # bump when the classifier or its training changes: old cache entries are then ignored
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = 2048  # the pool layer of the standard FID
DENSITY_FILE = "latent_density.npz"


class FeatureNet(nn.Module):
    """A small CNN classifier; its penultimate layer is the feature space of the Frechet distance."""

    def __init__(self, image_shape: Sequence[int], num_classes: int):
        super().__init__()
        h, w = image_shape[-2], image_shape[-1]
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * math.ceil(h / 4) * math.ceil(w / 4), FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _fingerprint(data: Dataset) -> str:
    h = hashlib.sha1()
    for t in (data.train_x, data.train_y):
        h.update(t.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return cache_root() / "feature_nets"


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    hits = sum((net(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
               for i in range(0, x.shape[0], batch_size))
    return hits / x.shape[0]


def train_feature_net(data: Dataset, steps: int = 2500, seed: int = 0, batch_size: int = 128,
                      lr: float = 1e-3) -> tuple[FeatureNet, float]:
    """Train the classifier on the training set (grey levels) for a fixed number of Adam steps
    (about 5 epochs of MNIST; many more passes over a small set); returns it with its test accuracy.

    Runs inside a forked random state, so it neither depends on nor disturbs the caller's seeds.
    """
    if data.train_y is None or not data.num_classes:
        raise DataError(f"The sample-quality distance needs a labelled dataset to train its classifier; "
                        f"{data.name!r} has no labels.")
    device = data.train_x.device
    with own_stream(device, seed):
        net = FeatureNet(data.image_shape, data.num_classes).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        n, step = data.train_x.shape[0], 0
        while step < steps:
            order = torch.randperm(n, device=device)
            for idx in order[: (steps - step) * batch_size].split(batch_size):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(data.train_x[idx]), data.train_y[idx]).backward()
                opt.step()
                step += 1
    net.eval()
    return net, accuracy(net, data.test_x, data.test_y)


def feature_net(data: Dataset, steps: int = 2500, seed: int = 0) -> tuple[FeatureNet, float]:
    """The cached classifier for this exact training set (trained on first use), with its test accuracy."""
    shape = "x".join(map(str, data.image_shape))
    name = f"{data.name}-{shape}-n{data.train_x.shape[0]}-{_fingerprint(data)}-v{VERSION}-t{steps}-s{seed}.pt"
    path = cache_dir() / name
    if path.is_file():
        state = torch.load(path, map_location=data.train_x.device, weights_only=True)
        net = FeatureNet(data.image_shape, data.num_classes).to(data.train_x.device)
        net.load_state_dict(state["net"])
        return net.eval(), state["accuracy"]
    net, acc = train_feature_net(data, steps, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.save_checkpoint(path, {"net": net.state_dict(), "accuracy": acc})
    return net, acc


class ClassifierFeatures(nn.Module):
    """torchmetrics' feature extractor for ``fd_*``: flat images [N, D] (clipped to [0, 1]) -> the
    classifier's 64-D penultimate features, in float64 (so torchmetrics' result stays float64)."""

    num_features = FEATURES  # read by FrechetInceptionDistance instead of probing with a 3x299x299 image

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return features(self.net, images).double()


class _Given(nn.Module):
    """Feature vectors passed through unchanged (in float64): the extractor of :func:`frechet_distance`."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def frechet_metric(feature: nn.Module | int, **kwargs):
    """torchmetrics' ``FrechetInceptionDistance`` keeping its real statistics across ``reset()``, and never
    synchronising across processes (rank 0 of a data-parallel run evaluates alone)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=feature, reset_real_features=False, sync_on_compute=False, **kwargs)


def _distance(metric) -> float:
    return max(float(metric.compute()), 0.0)  # rounding can leave a tiny negative number for identical sets


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two sets of feature vectors [N, d],
    by torchmetrics' ``FrechetInceptionDistance`` (float64; Tr (S_a S_b)^(1/2) from the eigenvalues of
    S_a S_b, which stays exact when dead ReLU features make a covariance singular)."""
    a, b = (torch.as_tensor(np.asarray(t.cpu() if torch.is_tensor(t) else t), dtype=torch.float64) for t in (a, b))
    metric = frechet_metric(_Given(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return _distance(metric)


@torch.no_grad()
def features(net: FeatureNet, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    return torch.cat([net.features(chunk.clamp(0, 1)) for chunk in images.split(batch_size)])


def inception_weights() -> Path | None:
    """torch-fidelity's InceptionV3 weights when the package and the file are both on this machine (never downloads)."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None
    candidates = [os.environ.get("PPVAE_INCEPTION_WEIGHTS", ""),
                  Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _rgb_uint8(images: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Flat grey images in [0, 1] -> [N, 3, h, w] uint8 (rounded), the input of the Inception extractor."""
    h, w = image_shape[-2], image_shape[-1]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, 1, h, w).expand(-1, 3, -1, -1)


def inception_metric(weights: Path, device: torch.device | str = "cpu"):
    """torchmetrics' standard FID (2048-D pool features) with the InceptionV3 weights read from ``weights``
    and torch-fidelity's own resize (``antialias=False``); its inputs are :func:`_rgb_uint8` images."""
    return frechet_metric(INCEPTION_FEATURES, feature_extractor_weights_path=str(weights), antialias=False).to(device)


def _update_inception(metric, images: torch.Tensor, image_shape: Sequence[int], real: bool,
                      batch_size: int = 100) -> None:
    u8 = _rgb_uint8(images, image_shape)
    for i in range(0, u8.shape[0], batch_size):
        metric.update(u8[i:i + batch_size], real=real)


def sample_quality(model: Callable, data: Dataset, n: int, sources: Sequence[str] = SOURCES,
                   mixture: dist.Distribution | None = None, more: Mapping[str, dist.Distribution] | None = None,
                   seed: int = 0) -> dict:
    """Frechet distances of n generated images per source to the first n test images.

    ``fd_SOURCE`` uses the suite's classifier features (not the Inception FID); ``aggregate`` samples the
    fitted ``mixture``. ``more`` names further distributions of z to decode samples of (``fd_NAME``), drawn
    on a stream of their own (``seed``) so that adding one changes no other number. ``fid_inception_SOURCE``
    is added only where Inception weights are available locally.
    """
    n = min(n, data.test_x.shape[0])
    real = data.test_x[:n]
    net, acc = feature_net(data)
    fd = frechet_metric(ClassifierFeatures(net)).to(real.device)
    fd.update(real, real=True)  # kept by every reset() below: the real statistics are computed once
    weights = inception_weights()
    if weights:
        fid = inception_metric(weights, real.device)
        _update_inception(fid, real, data.image_shape, real=True)
    out: dict = {"fd_points": n, "fd_classifier_test_accuracy": acc,
                 "fid_inception": f"computed with {weights}" if weights else
                 "not computed: torch-fidelity and its InceptionV3 weights are not on this machine"}

    def score(name: str, z: torch.Tensor) -> None:
        fake, _ = decode(model, z, real)
        fd.reset()
        fd.update(fake, real=False)
        out[f"fd_{name}"] = _distance(fd)
        if weights:
            fid.reset()
            _update_inception(fid, fake, data.image_shape, real=False)
            out[f"fid_inception_{name}"] = _distance(fid)

    for source in sources:
        score(source, draw_latents(source, n, model, real, mixture))
    with own_stream(real.device, seed):
        for name, latents in (more or {}).items():
            score(name, latents.sample((n,)))
    return out


@registry.register("analysis", "sample_quality", labels=True, images=True)
class SampleQuality(Analysis):
    """Frechet distances fd_prior / fd_aggregate / fd_aggregate_draws in a classifier's features (not the
    Inception FID), and KL(mixture || prior) of a Gaussian mixture fit to the aggregate posterior."""

    title = "Sample quality"

    def __init__(self, *, n: Annotated[int, Param(">= 1", "generated and test images for the distances")] = 1000,
                 components: Annotated[int, Param(">= 1", "Gaussian mixture components fit to the aggregate "
                                                          "posterior")] = 32):
        self.n, self.components = n, components

    def run(self, ctx: RunContext) -> Result:
        """:func:`sample_quality` from the prior and the aggregate posterior, KL(mixture || prior), and, for a
        2-D latent, the log densities of prior, aggregate posterior and mixture (``latent_density.png`` / ``.npz``)."""
        data, model, guide = ctx.data, ctx.model, ctx.guide
        pyro.set_rng_seed(ctx.seed + 2)
        mixture = ctx.aggregate_mixture(self.components)
        out = sample_quality(model, data, self.n, mixture=mixture, seed=ctx.seed + 3,
                             more={"aggregate_draws": ctx.aggregate_mixture(self.components, "draws")})
        out["aggregate_components"] = self.components
        out["kl_mixture_prior"], out["kl_mixture_prior_se"] = kl_to_prior(mixture, model, data.test_x)
        out |= elbo_surgery(model, guide, data.train_x, data.train_y)
        report = tables.records([out], ["fd_prior", "fd_aggregate", "fd_aggregate_draws", "kl_mixture_prior",
                                        "kl_aggregate_prior", "mutual_information", "kl_avg_posterior_prior",
                                        "fd_points", "fd_classifier_test_accuracy"]) + (
            "\nFrechet distances in the features of ppvae's classifier (not the Inception FID; "
            f"{out['fid_inception']}). `fd_aggregate` samples the sampler's mixture, fit to the posterior means; "
            "`fd_aggregate_draws` one fit to a draw of q(z|x) per training point. `kl_mixture_prior` is the KL "
            "of the sampler's mixture (the means' variances ignored, so collapsed units inflate it); "
            "`kl_aggregate_prior` "
            "is the aggregate posterior's own KL, from the split of the ELBO's average KL "
            "(`kl_avg_posterior_prior`) into it and the mutual information I_q(x; z), over "
            f"{out['surgery_points']} training points.\n")
        if mixture.event_shape != (2,):
            return Result(out, report=report)
        panels = density_panels(model, guide, data, mixture)
        runs.write_npz(ctx.run_dir / DENSITY_FILE, {"panels": panels}, compressed=True)
        return Result(out, [density_figure([panels], [ctx.name], ctx.run_dir / "latent_density.png")], report)

    @classmethod
    def aggregate(cls, folder: Path, study_runs: Sequence[StudyRun]) -> Result | None:
        """The 2-D latent log densities of every run in one figure (one row per run)."""
        found = [(r.label, r.run_dir / DENSITY_FILE) for r in study_runs if (r.run_dir / DENSITY_FILE).is_file()]
        if not found:
            return None
        panels = []
        for _, path in found:
            with np.load(path) as f:
                panels.append(f["panels"])
        return Result(figures=[density_figure(panels, [label for label, _ in found], folder / "latent_density.png")])


__all__ = ["FEATURES", "FeatureNet", "ClassifierFeatures", "train_feature_net", "feature_net", "frechet_metric",
           "frechet_distance", "features", "inception_weights", "inception_metric",
           "sample_quality", "SampleQuality", "cache_dir", "DENSITY_FILE"]
