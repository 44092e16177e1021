"""The sample-quality Frechet distance through torchmetrics agrees with the closed form on the same features."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from ppvae.analyses import sample_quality
from ppvae.data import load_dataset

REL = 1e-4


def reference(a, b) -> float:
    """The oracle, the formula torchmetrics replaced: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))."""
    a, b = (np.asarray(t, dtype=np.float64) for t in (a, b))
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    delta = a.mean(0) - b.mean(0)
    with warnings.catch_warnings():  # dead ReLU units of a FeatureNet leave S_a S_b singular; sqrtm says so
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(delta @ delta + np.trace(s_a + s_b - 2 * root))


def feature_sets(seed: int, d: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two fixed sets of a few hundred feature vectors with different means and covariances."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(400, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) * 0.3 + rng.normal(size=d)
    return a, b


def random_feature_net(image_shape=(1, 8, 8)) -> sample_quality.FeatureNet:
    torch.manual_seed(0)
    return sample_quality.FeatureNet(image_shape, 10).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_the_reference_formula(seed):
    a, b = feature_sets(seed)
    expected = reference(a, b)
    assert expected > 1
    assert sample_quality.frechet_distance(a, b) == pytest.approx(expected, rel=REL)
    assert sample_quality.frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == \
        pytest.approx(reference(a.astype(np.float32), b.astype(np.float32)), rel=REL)


def test_equal_sets_give_zero_and_a_mean_shift_gives_its_squared_norm():
    a, _ = feature_sets(3)
    delta = np.random.default_rng(4).normal(size=a.shape[1]) * 0.2
    assert sample_quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8 * np.trace(np.cov(a, rowvar=False)))
    assert sample_quality.frechet_distance(a, a + delta) == pytest.approx(delta @ delta, rel=REL)
    assert sample_quality.frechet_distance(a + delta, a) == pytest.approx(delta @ delta, rel=REL)


def test_classifier_features_metric_matches_the_reference_on_a_feature_net():
    """A real (untrained) FeatureNet as torchmetrics' custom extractor; the real statistics survive reset()."""
    net = random_feature_net()
    g = torch.Generator().manual_seed(0)
    real, fakes = torch.rand(400, 64, generator=g), [torch.rand(300, 64, generator=g) ** p for p in (2, 0.5)]
    metric = sample_quality.frechet_metric(sample_quality.ClassifierFeatures(net))
    metric.update(real, real=True)
    real_features = sample_quality.features(net, real)
    for fake in fakes:
        metric.reset()
        metric.update(fake, real=False)
        value = metric.compute()
        assert value.dtype == torch.float64
        expected = reference(real_features, sample_quality.features(net, fake))
        assert expected > 1e-3
        assert value.item() == pytest.approx(expected, rel=REL)
    metric.reset()
    metric.update(real, real=False)
    assert metric.compute().item() == pytest.approx(0.0, abs=1e-9)


def test_sample_quality_distances_equal_the_reference_on_the_same_features(monkeypatch):
    """End to end: the real test images' features once, then each source's decoded images."""
    data = load_dataset("digits")
    net = random_feature_net(data.image_shape)
    g = torch.Generator().manual_seed(1)
    fakes = {"prior": torch.rand(200, 64, generator=g) ** 2, "aggregate": torch.rand(200, 64, generator=g)}
    monkeypatch.setattr(sample_quality, "feature_net", lambda data: (net, 0.5))
    fakes["draws_mixture"] = torch.rand(200, 64, generator=g) ** 0.5

    class Named:  # a distribution of z whose samples decode to the fake images of that name
        def sample(self, shape):
            return "draws_mixture"

    monkeypatch.setattr(sample_quality, "draw_latents", lambda source, n, model, real, mixture: source)
    monkeypatch.setattr(sample_quality, "decode", lambda model, source, real: (fakes[source], None))
    monkeypatch.setattr(sample_quality, "inception_weights", lambda: None)
    out = sample_quality.sample_quality(None, data, 200, mixture=object(), more={"draws_mixture": Named()})
    real_features = sample_quality.features(net, data.test_x[:200])
    for source, fake in fakes.items():
        assert out[f"fd_{source}"] == pytest.approx(reference(real_features, sample_quality.features(net, fake)),
                                                    rel=REL)
    assert out["fd_points"] == 200 and out["fid_inception"].startswith("not computed")
