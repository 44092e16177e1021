"""ppvae.diagnostics: Pareto k-hat, R-hat/ESS and the ArviZ version shim."""

import sys
import types

import numpy as np
import pytest

from ppvae.evaluation import diagnostics


def test_psislw_works_along_the_last_axis_one_khat_per_row():
    rng = np.random.default_rng(0)
    light = rng.normal(0, 0.3, size=(3, 4000))  # log-normal weights with a light tail
    heavy = np.log(rng.pareto(1 / 0.9, size=(3, 4000)) + 1)  # Pareto tail with shape k = 0.9
    khat = diagnostics.pareto_khat(np.concatenate([light, heavy]))
    assert khat.shape == (6,)
    assert (khat[:3] < 0.5).all() and (khat[3:] > 0.7).all()
    one_by_one = [diagnostics.pareto_khat(row[None])[0] for row in np.concatenate([light, heavy])]
    np.testing.assert_allclose(khat, one_by_one)
    # the values are what ArviZ itself returns for the same matrix
    np.testing.assert_allclose(khat, diagnostics.arviz().psislw(np.concatenate([light, heavy]), 1.0)[1])


def test_khat_special_rows():
    rng = np.random.default_rng(1)
    lw = rng.normal(size=(4, 100))
    lw[0] = -3.0  # every weight equal: a perfect proposal
    lw[1, 5] = np.nan
    lw[2] = 1.0 + 1e-12 * rng.normal(size=100)  # equal up to rounding, within atol
    khat = diagnostics.pareto_khat(lw, atol=np.array([0.0, 0.0, 1e-9, 0.0]))
    assert khat[0] == -np.inf and np.isnan(khat[1]) and khat[2] == -np.inf and np.isfinite(khat[3])
    assert np.isnan(diagnostics.pareto_khat(rng.normal(size=(2, diagnostics.KHAT_MIN_SAMPLES - 1)))).all()
    assert np.isfinite(diagnostics.pareto_khat(rng.normal(size=(2, diagnostics.KHAT_MIN_SAMPLES)))).all()


def test_rhat_and_ess_treat_rows_as_chains():
    rng = np.random.default_rng(2)
    same = rng.normal(size=(4, 500))
    rhat, ess = diagnostics.rhat_ess(same)
    assert rhat == pytest.approx(1.0, abs=0.02) and ess > 1000
    shifted = same + np.arange(4)[:, None]
    rhat, ess = diagnostics.rhat_ess(shifted)
    assert rhat > 1.5 and ess < 100
    rhat, ess = diagnostics.rhat_ess(same[:1])
    assert np.isnan(rhat) and ess > 100
    assert all(np.isnan(diagnostics.rhat_ess(np.full((2, 10), np.nan))))


def test_arviz_1_path_takes_psis_from_arviz_stats(monkeypatch):
    """ArviZ >= 1.0 moved psislw to arviz-stats, which expects log-likelihoods and negates them."""
    seen = {}

    def psislw(ary, r_eff=1, axis=-1):
        seen["input"], seen["r_eff"], seen["axis"] = ary, r_eff, axis
        return -ary, np.full(ary.shape[:-1], 0.25)

    base = types.ModuleType("arviz_stats.base")
    base.array_stats = types.SimpleNamespace(psislw=psislw)
    monkeypatch.setitem(sys.modules, "arviz_stats", types.ModuleType("arviz_stats"))
    monkeypatch.setitem(sys.modules, "arviz_stats.base", base)
    monkeypatch.setattr(diagnostics, "arviz_major", lambda: 1)
    lw = np.random.default_rng(3).normal(size=(2, 50))
    np.testing.assert_array_equal(diagnostics.pareto_khat(lw), [0.25, 0.25])
    np.testing.assert_array_equal(seen["input"], -lw)
    assert seen["r_eff"] == 1.0 and seen["axis"] == -1
    with pytest.raises(diagnostics.ArviZVersionError, match="arviz>=0.23,<1"):
        diagnostics.inference_data({"test_nll": np.zeros((2, 10))})


def test_inference_data_and_figures(tmp_path):
    rng = np.random.default_rng(4)
    data = [diagnostics.inference_data({"test_nll": rng.normal(90 + i, 1, size=(3, 100))}) for i in range(2)]
    assert data[0].posterior["test_nll"].shape == (3, 100)
    forest = diagnostics.forest_plot(data, ["a", "b"], "test_nll", tmp_path / "forest.png", title="NLL")
    khat = diagnostics.khat_plot([rng.uniform(0, 1.2, 50), np.array([-np.inf, 0.2, np.nan])], ["x", "y"],
                                 tmp_path / "khat.png")
    assert forest.stat().st_size > 1000 and khat.stat().st_size > 1000
