"""The gradient-estimator study: its statistics, and the bundled experiment at smoke scale."""

import csv
import json

import pytest
import torch

from ppvae import config
from ppvae.analyses import gradient_study as gradients
from ppvae.cli import main
from ppvae.errors import ConfigError
from ppvae.studies import run as experiment

SMOKE = ["train.epochs=2", "data.max_train=300", "model.latent_dim=4", "model.decoder.hidden=[64]",
         "guide.encoder.hidden=[64]", "eval.k=50", "eval.num_test=50", "eval.gradient_study.repeats=100",
         "eval.gradient_study.batch=20"]


def test_gradient_moments_of_a_known_noisy_gradient():
    theta = torch.zeros(3, requires_grad=True)
    mu = torch.tensor([2.0, 0.0, -1.0])
    # d/dtheta (theta . eps) = eps ~ N(mu, 1): mean mu, variance 1, SNR |mu|
    mean, var = gradients.gradient_moments(lambda: theta @ (mu + torch.randn(3)), [theta], repeats=4000)
    torch.testing.assert_close(mean, mu.double(), atol=0.08, rtol=0)
    torch.testing.assert_close(var, torch.ones(3, dtype=torch.float64), atol=0.1, rtol=0)
    snr, variance = gradients.summarize(mean, var, repeats=4000)
    assert snr == pytest.approx(1.0, abs=0.1) and variance == pytest.approx(1.0, abs=0.1)


def test_parameters_split_into_guide_and_model():
    cfg = config.load("gradient_variance", SMOKE)
    data, trainer = experiment.prepare(cfg)
    parts = gradients.parameter_parts(trainer.guide, trainer.params, data.train_x[:5], None)
    encoder = {id(p) for p in parts["encoder"]}
    assert encoder == {id(p) for p in trainer.guide.parameters()}
    assert {id(p) for p in parts["decoder"]} == {id(p) for p in trainer.model.parameters()}


@pytest.fixture
def one_thread():
    """Hundreds of tiny backward passes: a second OpenMP thread only waits, and on a busy machine badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gradient_study_smoke_scale(tmp_path, one_thread):
    run_dir = experiment.run(config.load("gradient_variance", SMOKE), out=tmp_path)
    rows = list(csv.DictReader(open(run_dir / "gradient_variance.csv")))
    assert len(rows) == len(gradients.SETTINGS) * 3
    snr = {(r["estimator"], int(r["k"])): float(r["encoder_snr"]) for r in rows}
    # Rainforth et al. (2018): the standard IWAE encoder gradient's SNR falls as k grows ...
    assert snr["iwae-standard", 1] > snr["iwae-standard", 5] > snr["iwae-standard", 50], snr
    # ... while DReG's stays far higher and falls much less, if at all (Tucker et al. 2018)
    assert snr["iwae-dreg", 50] > 3 * snr["iwae-standard", 50], snr
    assert snr["iwae-dreg", 50] / snr["iwae-dreg", 1] > snr["iwae-standard", 50] / snr["iwae-standard", 1], snr
    biased = {(r["estimator"], int(r["k"])) for r in rows if r["biased"] == "True"}
    assert biased == {("iwae-stl", 5), ("iwae-stl", 50)}  # STL is unbiased at k = 1 only (Tucker et al. 2019)
    assert "biased" in (run_dir / "gradient_variance.md").read_text()
    decoder = {(r["estimator"], int(r["k"])): float(r["decoder_snr"]) for r in rows}
    assert decoder["iwae-standard", 50] > decoder["iwae-standard", 1]
    assert (run_dir / "gradient_variance.png").stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "## Gradient-estimator study" in report and "![gradient_variance](gradient_variance.png)" in report


def test_gradient_study_config_is_validated_and_listed(capsys):
    with pytest.raises(ConfigError, match=r"eval.gradient_study.ks\[0\] = 0 is invalid"):
        config.load("gradient_variance", ["eval.gradient_study.ks=[0, 5]"])
    assert main(["list"]) == 0
    assert "gradient_variance" in capsys.readouterr().out


def test_dreg_with_two_stochastic_layers_is_marked_biased_and_warned(one_thread):
    """Bauer & Mnih (2021): with a guide latent feeding another guide site DReG drops score terms at k > 1.
    The config rules refuse the combination; the gradient study (which runs every estimator) marks it, and a
    pair given to the estimator directly is warned before training."""
    import warnings

    import pyro

    from ppvae.build import build_pair
    from ppvae.data import load_dataset
    from ppvae.infer.estimators import make_estimator

    cfg = config.load("quickstart", ["model.latent_dim=4", "model.top_latent_dim=2", "model.top.hidden=[16]",
                                     "data.max_train=100"])
    data = load_dataset(cfg.data)
    model, guide = build_pair(cfg, data)
    x = data.train_x[:10]
    make_estimator({"name": "iwae", "k": 2})(model, guide, x)  # materializes the parameters
    params = dict(pyro.get_param_store().named_parameters())
    rows = gradients.study(model, guide, params, x, None, [1, 3], repeats=2)
    biased = {(r["estimator"], r["k"]) for r in rows if r["biased"]}
    assert biased == {("iwae-stl", 3), ("iwae-dreg", 3)}
    for k, warned in ((1, False), (3, True)):
        est = make_estimator({"name": "iwae", "k": k, "gradient": "dreg"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.check(model, guide, x)
        assert any("2 local latent sites" in str(w.message) for w in caught) == warned
        assert ("biased_gradient" in est.notes) == warned


def test_the_study_leaves_batch_norm_statistics_to_the_analyses_after_it(tmp_path, one_thread):
    """It runs the pair in training mode (the objective that was trained), which moves batch norm's running
    statistics; an analysis after it must see the evaluated pair: here the same bound as the evaluation's."""
    cfg = config.load("quickstart", ["model.decoder=cnn", "guide.encoder=cnn", "model.latent_dim=3",
                                     "train.epochs=1", "data.max_train=200", "eval.k=5", "eval.num_test=50",
                                     "eval.gradient_study={ks = [1], repeats = 3, batch = 20}",
                                     "eval.extra_k={ks = [5]}"])
    assert list(cfg.eval.analyses) == ["gradient_study", "extra_k"]
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    assert metrics["test_ll_k5"] == pytest.approx(metrics["test_ll"], rel=1e-6)
