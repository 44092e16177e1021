"""Aggregate-posterior sampling, KL(mixture || prior), the Frechet distance and ``ppvae sample``."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppvae.analyses import sample_quality
from ppvae.cli import main
from ppvae.config import load
from ppvae.data import load_dataset
from ppvae.evaluation import sampling
from ppvae.evaluation.sampling import fit_aggregate, kl_to_prior
from ppvae.sites import posterior_means
from ppvae.studies.run import run


def synthetic_latents(n: int = 3000) -> torch.Tensor:
    """Three well-separated correlated clusters in 2-D with unequal weights."""
    g = torch.Generator().manual_seed(1)
    counts, centres = [1500, 1000, 500], torch.tensor([[-4.0, 0.0], [3.0, 3.0], [2.0, -4.0]])
    mixing = torch.tensor([[1.0, 0.0], [0.8, 0.5]])
    parts = [c + torch.randn(k, 2, generator=g) @ mixing for k, c in zip(counts, centres)]
    return torch.cat(parts)[torch.randperm(n, generator=g)]


def mixture_moments(m: dist.MixtureSameFamily) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of a Gaussian mixture from its component parameters."""
    w, mu, cov = m.mixture_distribution.probs, m.component_distribution.loc, m.component_distribution.covariance_matrix
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def test_mixture_sampler_reproduces_the_mixture_moments():
    z = synthetic_latents()
    mixture = fit_aggregate(z, components=3, seed=0)
    mean, cov = mixture_moments(mixture)
    samples = mixture.sample((200_000,))
    assert torch.allclose(samples.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(samples.T), cov, atol=0.1)
    # and the fit itself matches the latent set it was fit to (EM keeps the first two moments)
    assert torch.allclose(mean, z.mean(0), atol=1e-3)
    assert torch.allclose(cov, torch.cov(z.T), rtol=0.02, atol=0.02)
    assert sorted(mixture.mixture_distribution.probs.tolist()) == pytest.approx([1 / 6, 1 / 3, 1 / 2], abs=0.01)


def test_monte_carlo_kl_matches_the_closed_form_for_one_component():
    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    gaussian = dist.MultivariateNormal(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))
    z = gaussian.sample((20_000,))
    mixture = fit_aggregate(z, components=1)
    exact = torch.distributions.kl_divergence(mixture.component_distribution,
                                              dist.MultivariateNormal(torch.zeros(2), torch.eye(2))).item()
    estimate, se = kl_to_prior(mixture, model, torch.zeros(1, 2), n=50_000)
    assert abs(estimate - exact) < 4 * se + 1e-3


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    assert sample_quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifts = [0.1, 0.5, 1.0, 3.0]
    values = [sample_quality.frechet_distance(a, a + s) for s in shifts]
    assert values == sorted(values) and values[0] > 0
    # a pure shift c moves only the mean term: FD = ||c||^2
    assert values == pytest.approx([16 * s**2 for s in shifts], rel=1e-6)
    # dead (constant) features leave a singular covariance; the distance stays exact
    dead = np.hstack([a, np.zeros((2000, 4))])
    assert sample_quality.frechet_distance(dead, dead + 1.0) == pytest.approx(20.0, rel=1e-6)


def test_feature_classifier_is_trained_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path))
    data = load_dataset("digits")
    net, acc = sample_quality.feature_net(data, steps=300)
    assert acc > 0.8  # 10 classes: far above chance
    (path,) = (tmp_path / "feature_nets").iterdir()
    again, acc_again = sample_quality.feature_net(data, steps=300)
    assert acc_again == acc and all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))
    assert sample_quality.features(net, data.test_x[:5]).shape == (5, sample_quality.FEATURES)
    assert sample_quality.inception_weights() is None  # no torch-fidelity weights here: never downloaded


def test_sample_command_from_prior_and_aggregate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample_quality, "feature_net",
                        lambda data, steps=2500, seed=0: sample_quality.train_feature_net(data, steps=200, seed=seed))
    cfg = load("quickstart", ["data.binarize=none", "data.max_train=300", "model.likelihood=gaussian_perpixel",
                              "model.likelihood.stage_one_max_epochs=1", "train.epochs=2", "eval.k=5", "eval.num_test=20",
                              "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]"])
    run_dir = run(cfg, out=tmp_path)
    assert main(["sample", str(run_dir), "--from", "prior", "--n", "16"]) == 0
    assert (run_dir / "samples-prior.png").is_file() and (run_dir / "uncertainty-prior.png").is_file()
    assert main(["sample", str(run_dir), "--from", "aggregate", "--n", "16", "--components", "4",
                 "--quality", "100"]) == 0
    printed = capsys.readouterr().out
    assert "KL(mixture || prior)" in printed and "not the Inception FID" in printed
    out = sample_quality.runs.read_json(run_dir / "samples-aggregate.json")
    assert out["components"] == 4 and out["kl_mixture_prior"] > 0 and out["fd_aggregate"] > 0
    assert out["fid_inception"].startswith("not computed")
    assert (run_dir / "samples-aggregate.png").is_file()


def test_standard_fid_is_added_only_where_torch_fidelity_and_its_weights_are_local(tmp_path, monkeypatch):
    """The Inception path's plumbing through torchmetrics, with a stand-in for its torch-fidelity extractor
    (no weights here) and its 64-D layer instead of the 2048-D one (a faster covariance, same code path)."""
    import importlib.machinery
    import sys
    import types

    from torchmetrics.image import fid

    seen = {}

    class FakeInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, antialias=True):
            super().__init__()
            seen.update(weights=feature_extractor_weights_path, features=features_list, antialias=antialias)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return x.float().flatten(1)[:, :64]

    package = types.ModuleType("torch_fidelity")
    package.__spec__ = importlib.machinery.ModuleSpec("torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setattr(fid, "_TORCH_FIDELITY_AVAILABLE", True)
    monkeypatch.setattr(fid, "NoTrainInceptionV3", FakeInception)
    monkeypatch.setattr(sample_quality, "INCEPTION_FEATURES", 64)
    assert sample_quality.inception_weights() is None  # the package alone is not enough
    weights = tmp_path / sample_quality.INCEPTION_FILE
    weights.write_bytes(b"")
    monkeypatch.setenv("PPVAE_INCEPTION_WEIGHTS", str(weights))
    assert sample_quality.inception_weights() == weights

    data = load_dataset("digits")
    monkeypatch.setattr(sample_quality, "feature_net", lambda data: (torch.nn.Identity(), 1.0))
    monkeypatch.setattr(sample_quality, "features", lambda net, images: images.clamp(0, 1))

    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.sigmoid(z.sum(-1, keepdim=True)).expand(x.shape), 0.1).to_event(1), obs=x)

    out = sample_quality.sample_quality(model, data, 200, sources=("prior",))
    assert seen == {"weights": str(weights), "features": ["64"], "antialias": False}
    assert out["fid_inception"].startswith("computed")
    assert out["fid_inception_prior"] > 0 and out["fd_prior"] > 0


LATENT_DIM = 2


def gaussian_model(x, y=None):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], LATENT_DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def normal_guide(shrink: float, scale: float):
    """q(z | x) = N(shrink * x, scale^2 I)."""
    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(shrink * x, scale).to_event(1))
    return guide


def test_elbo_surgery_splits_the_average_kl_exactly_on_a_gaussian_channel():
    """q(z|x_n) = N(mu_n, s^2) with mu_n ~ N(0, 1 - s^2): the aggregate q(z) is N(0, 1) = p(z), so its KL
    is 0, and the average KL is the channel's information, d/2 log(1/s^2), per point."""
    s = 0.5
    data_stream = torch.Generator().manual_seed(7)  # not the tests' global seed 0, which draws the guide's noise
    mu = torch.randn(4000, LATENT_DIM, generator=data_stream) * (1 - s**2) ** 0.5
    out = sampling.elbo_surgery(gaussian_model, normal_guide(1.0, s), mu, points=4000)
    exact = LATENT_DIM / 2 * math.log(1 / s**2)  # 1.386
    closed_form_avg = 0.5 * (LATENT_DIM * s**2 + (mu**2).sum(1) - LATENT_DIM - LATENT_DIM * math.log(s**2)).mean()
    assert out["kl_avg_posterior_prior"] == pytest.approx(float(closed_form_avg), abs=0.06)
    assert out["mutual_information"] == pytest.approx(exact, abs=0.08)
    assert abs(out["kl_aggregate_prior"]) < 0.05 + 3 * out["kl_aggregate_prior_se"]
    assert out["mutual_information"] <= math.log(4000) and not out["mi_at_bound"]
    sharp = sampling.elbo_surgery(gaussian_model, normal_guide(1.0, 0.01), mu, points=500)  # no overlap
    assert sharp["mi_at_bound"] and sharp["mutual_information"] == pytest.approx(math.log(500), abs=0.1)


def test_elbo_surgery_says_it_ran_out_of_memory_instead_of_not_applicable(monkeypatch):
    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    mu = torch.zeros(10, LATENT_DIM)
    assert "surgery_note" not in sampling.elbo_surgery(gaussian_model, normal_guide(1.0, 0.5), mu)
    monkeypatch.setattr(sampling, "aggregate_log_density", out_of_memory)
    out = sampling.elbo_surgery(gaussian_model, normal_guide(1.0, 0.5), mu)
    assert out["mutual_information"] is None and out["surgery_note"] == "out of memory at 10 points: not measured"


def test_collapsed_units_do_not_inflate_the_aggregate_kl(capsys):
    """Issue 15, defect 4: posterior means squeezed near 0 with unit variances (collapse) make a
    mixture fit to the means narrow, so its KL to the prior is large, while the aggregate posterior,
    variances included, is the prior: its KL and the mutual information are near 0."""
    x = torch.randn(3000, LATENT_DIM, generator=torch.Generator().manual_seed(8))
    guide = normal_guide(1e-3, 1.0)
    mixture = fit_aggregate(posterior_means(guide, x), 8)
    assert kl_to_prior(mixture, gaussian_model, x)[0] > 10  # what the means-fit mixture said
    out = sampling.elbo_surgery(gaussian_model, guide, x)
    assert abs(out["kl_aggregate_prior"]) < 0.02 and abs(out["mutual_information"]) < 0.02
    assert out["mutual_information"] >= -3 * out["mutual_information_se"]  # average KL >= aggregate KL


def test_units_holding_a_share_of_the_kl():
    assert sampling.units_holding([1 / 32] * 200, 0.9) == 180  # spread thinly: every unit above 0.01 nats
    assert sampling.units_holding([5.0, 4.0] + [0.02] * 198, 0.9) == 136  # two strong units, a long tail
    assert sampling.units_holding([5.0, 4.0] + [0.001] * 198, 0.9) == 2
    assert sampling.units_holding([0.0, 0.0], 0.9) == 1


def test_every_run_reports_its_collapse_diagnostics(tmp_path):
    """metrics.json holds the KL of each unit (closed form for the Normal pair), the units carrying
    more than 0.01 nats and the ELBO split on the test points; none of it for a point-mass guide."""
    tiny = ["data.max_train=200", "train.epochs=1", "eval.k=200", "model.latent_dim=3"]
    folder = run(load("quickstart", tiny), out=tmp_path / "normal")
    m = json.loads((folder / "metrics.json").read_text())
    assert len(m["test_kl_per_unit"]) == 3 and all(v >= 0 for v in m["test_kl_per_unit"])
    assert sum(m["test_kl_per_unit"]) == pytest.approx(m["test_kl"], rel=0.05, abs=0.005)  # closed form vs MC
    assert m["test_units_carrying_kl"] == sum(v > sampling.UNIT_KL_THRESHOLD for v in m["test_kl_per_unit"])
    assert 1 <= m["test_units_for_90pct_kl"] <= 3
    assert 0 <= m["test_mutual_information"] <= math.log(m["eval_points"]) + 0.1
    folder = run(load("quickstart", [*tiny, "guide.family=delta"]), out=tmp_path / "delta")
    m = json.loads((folder / "metrics.json").read_text())
    assert m["test_kl_per_unit"] is None and m["test_mutual_information"] is None
