"""ppvae.diagnostics: Pareto k-hat, R-hat/ESS, LOO and the figures, with ArviZ 0.23 or 1.x."""

import types

import numpy as np
import pytest
from scipy import stats

from ppvae.evaluation import diagnostics


def arviz_1() -> bool:
    return diagnostics.arviz_major() >= 1


def fixed_log_weights(samples):
    """Three rows of log importance weights without randomness: light, Pareto k = 0.9 and k = 0.5 tails."""
    u = (np.arange(samples) + 0.5) / samples
    return np.stack([0.3 * stats.norm.ppf(u), -0.9 * np.log1p(-u),
                     -0.5 * np.log1p(-u) + 0.1 * np.sin(np.arange(samples))])


def fixed_draws():
    """[4 chains, 500 draws], autocorrelated, two chains shifted a little."""
    t = np.arange(2000.0)
    return ((np.sin(0.7 * t) + 0.5 * np.cos(2.3 * t) + 0.2 * np.sin(0.05 * t)).reshape(4, 500)
            + np.array([[0.0], [0.1], [0.0], [0.3]]))


def fixed_log_lik():
    """Three models' [S = 200 draws, N = 30 points] log-likelihoods; "heavy" has k-hat > 0.7 everywhere."""
    s, n = np.meshgrid(np.arange(200.0), np.arange(30.0), indexing="ij")
    base = -1.0 - 0.3 * np.sin(0.37 * s + 1.3 * n) ** 2
    return {"good": base, "worse": base - 0.05 - 0.2 * np.cos(0.11 * s * (n + 1)) ** 2,
            "heavy": base - 2.0 * (np.sin(0.5 * s + n) > 0.98) * (1 + n)}


def library_khat(log_w):
    """The installed ArviZ's own PSIS k-hat of each row (r_eff = 1)."""
    if arviz_1():
        from arviz_stats.base import array_stats

        return array_stats.psislw(-log_w, r_eff=1.0, axis=-1)[1]  # it takes log-likelihoods
    return diagnostics.arviz().psislw(log_w, 1.0)[1]


def library_rhat_ess(draws):
    if arviz_1():
        from arviz_stats.base import array_stats

        return (array_stats.rhat(draws, chain_axis=-2, draw_axis=-1),
                array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk"))
    return diagnostics.arviz().rhat(draws), diagnostics.arviz().ess(draws, method="bulk")


def library_loo(log_lik):
    az = diagnostics.arviz()
    if arviz_1():
        import arviz_stats

        result = arviz_stats.loo(az.from_dict({"log_likelihood": {"x": log_lik[None]}}), pointwise=True, reff=1.0)
        return result.elpd, result.p, np.asarray(result.elpd_i), np.asarray(result.pareto_k)
    result = az.loo(az.from_dict(log_likelihood={"x": log_lik[None]}), pointwise=True, reff=1.0)
    return result.elpd_loo, result.p_loo, np.asarray(result.loo_i), np.asarray(result.pareto_k)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")  # the direct loo call
def test_the_numbers_are_the_installed_arviz_own():
    """k-hat, R-hat, ESS and LOO against the direct call of whichever ArviZ line is installed (200 samples:
    both lines' PSIS take the same 40-weight tail there)."""
    log_w = fixed_log_weights(200)
    np.testing.assert_allclose(diagnostics.pareto_khat(log_w), library_khat(log_w), rtol=1e-12)
    np.testing.assert_allclose(diagnostics.rhat_ess(fixed_draws()), library_rhat_ess(fixed_draws()), rtol=1e-12)
    rows, khat = diagnostics.compare_pointwise(fixed_log_lik())
    for row in rows:
        elpd, p, elpd_i, pareto_k = library_loo(fixed_log_lik()[row["model"]])
        assert row["elpd_loo"] == pytest.approx(elpd, rel=1e-12) and row["p_loo"] == pytest.approx(p, rel=1e-12)
        assert row["se"] == pytest.approx(np.sqrt(elpd_i.size * np.var(elpd_i)), rel=1e-12)  # ArviZ 0.23's se
        np.testing.assert_allclose(khat[row["model"]], pareto_k, rtol=1e-12)


# ArviZ 0.23.4 (Python 3.11) on the fixed arrays; ArviZ 1.3 gives them too, to rounding
KHAT_023 = {26: [0.27529716098999274, 0.5490171155351372, 0.3884367486523974],
            200: [0.08181073429274795, 0.787696363307366, 0.5170248744416702],
            1000: [0.03612660289069477, 0.8442664334030683, 0.5073961478094444]}
RHAT_ESS_023 = (1.014398718375798, 1004.9572726225439)
COMPARE_023 = [
    {"model": "good", "rank": 0.0, "elpd_loo": -34.66897127082721, "p_loo": 0.3378656768134789, "elpd_diff": 0.0,
     "weight": 1.0, "se": 0.0077505565854678726, "dse": 0.0, "warning": False, "scale": "log"},
    {"model": "worse", "rank": 1.0, "elpd_loo": -39.249069446949456, "p_loo": 0.49211284836049884,
     "elpd_diff": 4.580098176122243, "weight": 2.67841304690819e-12, "se": 0.008105493546669984,
     "dse": 0.0035087703840264053, "warning": False, "scale": "log"},
    {"model": "heavy", "rank": 2.0, "elpd_loo": -738.0777335322523, "p_loo": 701.753055157053,
     "elpd_diff": 703.4087622614252, "weight": 0.0, "se": 76.21146840613474, "dse": 76.21160602409762,
     "warning": True, "scale": "log"},
]
# the same with the first 4 draws only (too few for a tail fit: k-hat inf, the weights unsmoothed)
COMPARE_4_DRAWS_023 = [
    {"model": "good", "rank": 0.0, "elpd_loo": -34.5442599345265, "p_loo": 0.18012378974445653, "elpd_diff": 0.0,
     "weight": 1.0, "se": 0.39564893915602223, "dse": 0.0, "warning": True, "scale": "log"},
    {"model": "worse", "rank": 1.0, "elpd_loo": -39.950871605577525, "p_loo": 0.31140737629391424,
     "elpd_diff": 5.406611671051029, "weight": 1.1435297153639112e-14, "se": 0.42329091183698464,
     "dse": 0.17352132834341705, "warning": True, "scale": "log"},
    {"model": "heavy", "rank": 2.0, "elpd_loo": -204.08719739769413, "p_loo": 167.5623546249949,
     "elpd_diff": 169.54293746316762, "weight": 0.0, "se": 64.93938159814346, "dse": 64.93383450971187,
     "warning": True, "scale": "log"},
]


@pytest.mark.parametrize("samples", sorted(KHAT_023))
def test_khat_is_arviz_0_23_s_with_either_line(samples):
    """With 1000 samples arviz-stats' own psislw fits a 94-weight tail (0.23: 95); ppvae's k-hat is 0.23's."""
    np.testing.assert_allclose(diagnostics.pareto_khat(fixed_log_weights(samples)), KHAT_023[samples], rtol=1e-10)


def same_table(rows, table):
    assert [list(row) for row in rows] == [list(row) for row in table]  # the same columns, in order
    for row, expected in zip(rows, table):
        numbers = [key for key, value in expected.items() if type(value) is float]
        assert {key: row[key] for key in numbers} == pytest.approx({key: expected[key] for key in numbers},
                                                                   rel=1e-9, abs=1e-9)  # weights: optimizer tolerance
        assert {key: row[key] for key in expected if key not in numbers} == {
            key: expected[key] for key in expected if key not in numbers}
        assert [type(row[key]) for key in expected] == [type(expected[key]) for key in expected]


def test_rhat_ess_and_the_loo_table_are_arviz_0_23_s_with_either_line():
    assert diagnostics.rhat_ess(fixed_draws()) == pytest.approx(RHAT_ESS_023, rel=1e-10)
    rows, khat = diagnostics.compare_pointwise(fixed_log_lik())
    same_table(rows, COMPARE_023)
    assert (khat["heavy"] > diagnostics.KHAT_GOOD).all() and (khat["good"] < 0).all()
    rows, khat = diagnostics.compare_pointwise({name: ll[:4] for name, ll in fixed_log_lik().items()})
    same_table(rows, COMPARE_4_DRAWS_023)  # arviz-stats' own loo fails below 5 draws
    assert all(np.isposinf(k).all() for k in khat.values())


def test_psislw_works_along_the_last_axis_one_khat_per_row():
    rng = np.random.default_rng(0)
    light = rng.normal(0, 0.3, size=(3, 4000))  # log-normal weights with a light tail
    heavy = np.log(rng.pareto(1 / 0.9, size=(3, 4000)) + 1)  # Pareto tail with shape k = 0.9
    khat = diagnostics.pareto_khat(np.concatenate([light, heavy]))
    assert khat.shape == (6,)
    assert (khat[:3] < 0.5).all() and (khat[3:] > 0.7).all()
    one_by_one = [diagnostics.pareto_khat(row[None])[0] for row in np.concatenate([light, heavy])]
    np.testing.assert_allclose(khat, one_by_one)


def test_khat_special_rows():
    rng = np.random.default_rng(1)
    lw = rng.normal(size=(4, 100))
    lw[0] = -3.0  # every weight equal: a perfect proposal
    lw[1, 5] = np.nan
    lw[2] = 1.0 + 1e-12 * rng.normal(size=100)  # equal up to rounding, within atol
    khat = diagnostics.pareto_khat(lw, atol=np.array([0.0, 0.0, 1e-9, 0.0]))
    assert khat[0] == -np.inf and np.isnan(khat[1]) and khat[2] == -np.inf and np.isfinite(khat[3])
    assert np.isnan(diagnostics.pareto_khat(rng.normal(size=(2, diagnostics.KHAT_MIN_SAMPLES - 1)))).all()
    first = diagnostics.KHAT_MIN_SAMPLES
    if arviz_1():  # arviz-stats declines the 5-weight tails of 21 to 25 samples
        assert np.isnan(diagnostics.pareto_khat(rng.normal(size=(2, first)))).all()
        first = 26
    assert np.isfinite(diagnostics.pareto_khat(rng.normal(size=(2, first)))).all()
    tied = rng.normal(size=(1, 300))
    tied[0, -60:] = 5.0  # the whole tail ties: ArviZ 0.23 finds no weight above its cutoff
    assert diagnostics.pareto_khat(tied)[0] == np.inf


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


def test_arviz_1_path_fits_arviz_stats_tail_to_arviz_0_23_s_tail(monkeypatch):
    """The ArviZ >= 1.0 branch, here on either line: arviz-stats' tail fit gets 0.23's tail lengths."""
    seen = []

    def ps_tail(ary, n_draws, n_draws_tail, smooth_draws=False, tail="both", log_weights=False):
        seen.append((n_draws, n_draws_tail, smooth_draws, tail, log_weights))
        return ary, 0.25

    monkeypatch.setattr(diagnostics, "arviz_major", lambda: 1)
    monkeypatch.setattr(diagnostics, "_array_stats", lambda: types.SimpleNamespace(_ps_tail=ps_tail))
    rng = np.random.default_rng(3)
    for samples, tail in ((21, 5), (26, 6), (200, 40), (201, 41), (1000, 95), (5000, 213)):
        seen.clear()
        np.testing.assert_array_equal(diagnostics.pareto_khat(rng.normal(size=(2, samples))), [0.25, 0.25])
        assert seen == [(samples, tail, True, "right", True)] * 2, samples
    monkeypatch.setattr(diagnostics, "_array_stats", lambda: types.SimpleNamespace())
    monkeypatch.setattr(diagnostics, "_array_stats_version", lambda: "9.9")
    with pytest.raises(diagnostics.ArviZVersionError, match="arviz-stats 9.9"):
        diagnostics.pareto_khat(rng.normal(size=(2, 50)))


def test_inference_data_and_figures(tmp_path):
    rng = np.random.default_rng(4)
    data = [diagnostics.inference_data({"test_nll": rng.normal(90 + i, 1, size=(3 - i, 100))},
                                       attrs={"configuration": f"c{i}"}) for i in range(2)]
    assert data[0].posterior["test_nll"].shape == (3, 100) and data[1].posterior["test_nll"].shape == (2, 100)
    assert data[1].attrs["configuration"] == "c1"
    one_seed = diagnostics.inference_data({"test_nll": rng.normal(92, 1, size=(1, 100))})  # no R-hat
    forest = diagnostics.forest_plot(data + [one_seed], ["a", "b", "c"], "test_nll", tmp_path / "forest.png",
                                     title="NLL")
    khat = diagnostics.khat_plot([rng.uniform(0, 1.2, 50), np.array([-np.inf, 0.2, np.nan]), np.full(3, np.nan)],
                                 ["x", "y", "z"], tmp_path / "khat.png")
    assert forest.stat().st_size > 1000 and khat.stat().st_size > 1000
