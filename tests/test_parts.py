"""Every registered likelihood, prior, posterior family and network, tested by the same suite.

The cases come from the registry, filtered by traits: a part added in one file is trained with
every estimator, evaluated and checked for a visible closed-form-KL fallback without editing
this file. A part is tried in the reference pair (Bernoulli likelihood, Normal prior and guide,
MLPs), with the others swapped only where its traits require (a prior on (0, 1) gets a guide
on (0, 1); a likelihood for real values gets grey-level data).
"""

import json
import math
import re
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

from ppvae import config, registry
from ppvae.build import build_pair
from ppvae.cli import main
from ppvae.data import load_dataset
from ppvae.errors import ConfigError, EstimatorError
from ppvae.evaluation.loglik import evaluate
from ppvae.infer.estimators import make_estimator
from ppvae.infer.importance import log_weights
from ppvae.infer.trainer import Trainer
from ppvae.sites import LATENT

ESTIMATORS = registry.names("estimator")
SMALL = ["model.latent_dim=3", "model.decoder.hidden=[16]", "guide.encoder.hidden=[16]", "data.max_train=64"]


def first(kind: str, trait: str, value) -> str:
    """The reference part (normal) where it has the trait, else the first that has it."""
    names = list(registry.iter_traits(kind, trait, value))
    return "normal" if "normal" in names else names[0]


def overrides(kind: str, name: str) -> list[str]:
    """A config with part ``name`` of ``kind`` and reference parts elsewhere, fitted to its traits."""
    e = registry.entry(kind, name)
    if kind == "prior":
        return [f"model.prior={name}", f"guide.family={first('family', 'support', e.traits['support'])}"]
    if kind == "family":
        return [f"guide.family={name}", f"model.prior={first('prior', 'support', e.traits['support'])}"]
    if kind == "likelihood":
        return [f"model.likelihood={name}"] + ([] if e.traits["binary_data"] else ["data.binarize=none"])
    if kind == "network":
        return [f"model.decoder={name}", f"guide.encoder={name}"]  # the part alone: its own defaults
    raise ValueError(kind)


PARTS = [(kind, name) for kind in ("likelihood", "prior", "family", "network") for name in registry.names(kind)]


def part_id(case) -> str:
    return "-".join(map(str, case))


@pytest.fixture(scope="module")
def digits():
    return {binarize: load_dataset("digits", binarize=binarize, max_train=64) for binarize in ("dynamic", "none")}


def pair_for(digits, extra: list[str]):
    cfg = config.load("quickstart", [*SMALL, *extra])
    data = digits[cfg.data.binarize]
    return cfg, data, *build_pair(cfg, data)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("case", PARTS, ids=part_id)
def test_part_trains_with_each_estimator(digits, case, estimator):
    extra = [*overrides(*case), f"estimator.name={estimator}"] + (["estimator.k=3"] if estimator == "iwae" else [])
    cfg, data, model, guide = pair_for(digits, extra)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(data.batches(32, shuffle=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.setup(x)
    before = {name: p.detach().clone() for name, p in trainer.params.items()}
    losses = [trainer.train_step(x).item() / 32 for _ in range(3)]
    assert all(math.isfinite(v) and v < 500 for v in losses), losses
    assert any(not torch.equal(before[n], p) for n, p in trainer.params.items() if n.startswith("model"))
    if estimator != "meanfield":
        return
    q = pyro.poutine.trace(guide).get_trace(x).nodes[LATENT]["fn"]
    try:
        kl_divergence(q, model.prior().expand(q.batch_shape))
        closed_form = True
    except NotImplementedError:
        closed_form = False
    fallback = trainer.estimator.notes["kl_monte_carlo_sites"]
    if closed_form:
        assert fallback == [] and not any("Monte Carlo KL" in str(w.message) for w in caught)
    else:  # no closed form: the fallback is visible, and strict refuses it
        assert [s.split(":")[0] for s in fallback] == [LATENT]
        assert any("Monte Carlo KL" in str(w.message) for w in caught)
        with pytest.raises(EstimatorError, match="strict"):
            make_estimator({"name": "meanfield", "strict": True}).check(model, guide, x)


@pytest.mark.parametrize("case", [*PARTS, ("weights", "bayesian")], ids=part_id)
def test_evaluated_nll_is_sane(digits, case):
    """After a few steps the test NLL (IWAE k = 64) lies below minus the ELBO and, for binary data, below the
    64 ln 2 nats of a coin per pixel (plus slack): an evaluation that mis-scores a part lands far outside."""
    extra = ["model.weights=bayesian"] if case[0] == "weights" else overrides(*case)
    pyro.set_rng_seed(0)
    cfg, data, model, guide = pair_for(digits, extra)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(data.batches(64, shuffle=False))
    trainer.setup(x)
    for _ in range(30):
        trainer.train_step(x)
    m = evaluate(model, guide, data.test_x[:50], k=64, seed=0)
    assert m["test_nll"] <= -m["test_elbo"] and math.isfinite(m["test_nll"]), m
    if cfg.model.likelihood.traits["binary_data"]:
        assert 0 < m["test_nll"] < 64 * math.log(2) + 15, m


@pytest.mark.parametrize("family", registry.names("family"))
def test_stl_log_q_carries_only_the_path_gradient(digits, family):
    """STL / DReG score each draw with the guide's parameters detached: the gradient of the log
    weight reaches the encoder only through z, d/dphi [log p(z) - log q(z)] = grad_z(...) dz/dphi."""
    cfg, data, model, guide = pair_for(digits, overrides("family", family))
    x, _ = next(data.batches(5, shuffle=False))
    pyro.set_rng_seed(0)
    w = log_weights(model, guide, x, k=2, detach_guide_params=True)
    (z,) = w.guide_values
    params = [p for p in guide.parameters() if p.requires_grad]
    got = torch.autograd.grad(w.latent.sum(), params, allow_unused=True, retain_graph=True)
    fresh = z.detach().requires_grad_(True)  # a copy: the flow inverts its layers, no cached input
    latent = model.prior().log_prob(fresh) - guide.posterior(x).log_prob(fresh)
    (dz,) = torch.autograd.grad(latent.sum(), fresh)
    want = torch.autograd.grad(z, params, grad_outputs=dz, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in got)
    for g, ref in zip(got, want):
        torch.testing.assert_close(g if g is not None else torch.zeros_like(ref),
                                   ref if ref is not None else torch.zeros_like(g), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("kind", ["prior", "family"])
def test_prior_and_guide_must_share_the_support(digits, kind):
    for name in registry.names(kind):
        support = registry.entry(kind, name).traits["support"]
        other = "family" if kind == "prior" else "prior"
        for mismatch in (n for n in registry.names(other) if registry.entry(other, n).traits["support"] != support):
            key = {"prior": "model.prior", "family": "guide.family"}
            with pytest.raises(ConfigError, match="lives on .* describes z on"):
                config.load("quickstart", [f"{key[kind]}={name}", f"{key[other]}={mismatch}"])


def test_learned_mixture_prior_is_trained(digits):
    cfg, data, model, guide = pair_for(digits, ["model.prior=mixture", "model.prior.components=4"])
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    x, _ = next(data.batches(32, shuffle=False))
    trainer.setup(x)
    assert {"model$$$prior.logits", "model$$$prior.locs", "model$$$prior.log_scales"} <= set(trainer.params)
    locs = model.prior.locs.detach().clone()
    trainer.train_step(x)
    assert not torch.equal(locs, model.prior.locs)


def test_beta_prior_decoder_reads_codes_on_the_unit_interval(digits):
    _, _, model, _ = pair_for(digits, ["model.prior=beta", "guide.family=beta"])
    z = torch.tensor([[-500.0, 0.0, 500.0]])
    torch.testing.assert_close(model.decoder[0](z), torch.tensor([[0.0, 0.5, 1.0]]))


def test_student_t_prior_and_laplace_likelihood_are_parts_of_one_file_each(tmp_path, capsys):
    """Each was added as one new file (models/priors/student_t.py, models/likelihoods/laplace.py): named from TOML
    with their parameters, listed, and run end to end."""
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "student_t" in listed and "[df]" in listed and "laplace" in listed
    assert main(["list", "--keys"]) == 0
    keys = capsys.readouterr().out
    assert "model.prior.df" in keys and "model.likelihood.learned" in keys
    toml = tmp_path / "heavy.toml"
    toml.write_text('[data]\nname = "digits"\nbinarize = "none"\nmax_train = 200\n'
                    '[model]\nlatent_dim = 2\nprior = { name = "student_t", df = 4.0 }\n'
                    'likelihood = { name = "laplace", scale = 0.2 }\n'
                    'decoder = { hidden = [32] }\n[guide]\nencoder = { hidden = [32] }\n'
                    '[train]\nepochs = 2\n[eval]\nk = 20\n')
    assert main(["run", str(toml), "--out", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    saved = json.loads((run_dir / "config.json").read_text())["model"]
    assert saved["prior"] == {"name": "student_t", "df": 4.0}
    assert saved["likelihood"] == {"name": "laplace", "scale": 0.2, "learned": True}
    assert math.isfinite(metrics["test_ll"]) and metrics["test_ll"] >= metrics["test_elbo"] - 1


def test_the_readme_shows_the_student_t_prior_as_it_is():
    root = Path(__file__).resolve().parents[1]
    block = re.search(r"<!-- new-part.*?-->\s*```python\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    assert block == (root / "models" / "priors" / "student_t.py").read_text()
