"""Config validation: every bad value is refused with a message naming the key; part parameters live in the
part's table; overrides (hard and soft) and 0.1's flat keys; and no config, however mangled, gets past
ppvae as anything but a short run or one of its own errors."""

import copy
import json
import logging
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppvae import config, registry, runs
from ppvae.errors import ConfigError, PPVAEError
from ppvae.studies import run as experiment
from ppvae.studies import study

FIXTURES = Path(__file__).parent / "fixtures" / "v0_runs"
BINARY = {"data": {"binarize": "dynamic"}}  # the default likelihood (Bernoulli) needs binary data


def test_the_default_config_says_what_it_lacks():
    with pytest.raises(ConfigError, match="'bernoulli' needs binary data.*data.binarize = 'dynamic'"):
        config.from_dict({})

# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("raw, fragment", [
    ({"trian": {"lr": 0.1}}, "Unknown config key 'trian'. Did you mean 'train'?"),
    ({"train": {"learning_rate": 0.1}}, "Unknown config key 'train.learning_rate'."),
    ({"model": {"decoder": {"hiden": [8]}}}, "model.decoder.hiden is not a parameter of network 'mlp'. "
                                             "Did you mean model.decoder.hidden?"),
    ({"train": 5}, "[train] must be a table"),
    ({"train": {"epochs": True}}, "train.epochs = true has the wrong type: expected int"),
    ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 has the wrong type: expected int"),
    ({"train": {"lr": "fast"}}, 'train.lr = "fast" has the wrong type: expected float'),
    ({"train": {"lr": 0}}, "train.lr = 0.0 is invalid: it must be > 0"),
    ({"estimator": {"beta": math.inf}}, "estimator.beta = inf is invalid: it must be a finite number"),
    ({"estimator": {"name": "renyi", "alpha": math.nan}}, "must be a finite number"),
    ({"estimator": {"name": "renyi", "alpha": 1}}, "estimator.alpha = 1.0 is invalid: it must be != 1"),
    ({"estimator": {"name": "trace", "k": 5}}, "estimator.k is not a parameter of estimator 'trace'"),
    ({"estimator": {"name": "iwea"}}, "estimator.name = 'iwea' is not one of"),
    ({"train": {"seed": -1}}, "train.seed = -1 is invalid: it must be in [0, 4294967295]"),
    ({"train": {"seed": 2**32}}, "it must be in [0, 4294967295]"),
    ({"data": {"binarize": "dynamic", "test_fraction": 1.0}}, "data.test_fraction = 1.0 is invalid: it must be in (0, 1)"),
    ({"data": {"name": "npz"}}, "data.name = 'npz' needs data.path"),
    ({"data": {"binarize": "threshold", "threshold": 1.0}}, "data.threshold = 1.0 is invalid: it must be in [0, 1)"),
    ({"guide": {"encoder": {"hidden": [8, 0]}}}, "guide.encoder.hidden[1] = 0 is invalid: it must be > 0"),
    ({"model": {"decoder": {"hidden": [8] * 5}}}, "model.decoder.hidden = [8, 8, 8, 8, 8] has 5 items; it takes 0 to 4"),
    ({"model": {"prior": {"name": "beta", "df": 3}}}, "model.prior.df is not a parameter of prior 'beta'"),
    ({"model": {"prior": 3}}, "model.prior = 3 must name a prior"),
    ({"model": {"prior": "betta"}}, "model.prior = 'betta' is not one of"),
    ({"eval": {"theory": 3}}, "eval.theory = 3: write true (its defaults), false, or a table"),
    ({"eval": {"sample_qualty": True}}, "Unknown config key 'eval.sample_qualty'. Did you mean 'eval.sample_quality'?"),
    ({"model": {"prior": "beta"}}, "model.prior = 'beta' lives on (0, 1), in logit coordinates, but guide.family = "
                                   "'normal'"),
])
def test_invalid_config_is_refused_with_the_key_named(raw, fragment):
    with pytest.raises(ConfigError) as e:
        config.from_dict(BINARY | raw)
    assert fragment in str(e.value)


def test_range_bounds_are_inclusive_only_where_written_so():
    assert config.from_dict(BINARY | {"train": {"seed": 0}}).train.seed == 0
    assert config.from_dict(BINARY | {"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1
    assert config.from_dict({"data": {"binarize": "dynamic", "test_fraction": 0.5}}).data.test_fraction == 0.5


def test_a_part_is_a_table_with_its_own_parameters():
    cfg = config.from_dict(BINARY | {"model": {"prior": {"name": "beta", "a": 0.5}}, "guide": {"family": "kumaraswamy"}})
    assert (cfg.model.prior.name, cfg.model.prior.a, cfg.model.prior.b) == ("beta", 0.5, 0.2)
    assert config.to_dict(cfg)["model"]["prior"] == {"name": "beta", "a": 0.5, "b": 0.2}
    assert config.from_dict(config.to_dict(cfg)) == cfg  # a config.json reads back to the same config


def test_a_place_keeps_its_own_defaults_for_its_part():
    """model.top defaults to a narrower tanh MLP than the decoder; naming the same part keeps them."""
    cfg = config.from_dict(BINARY | {"model": {"top": {"hidden": [8]}}})
    assert cfg.model.top.activation == "tanh" and cfg.model.top.hidden == (8,)
    assert config.from_dict(BINARY).model.decoder.activation == "relu"
    assert config.from_dict(BINARY | {"model": {"top": "cnn"}}).model.top.hidden == (32, 64)  # another part: its own


def test_analyses_are_tables_of_the_eval_section():
    cfg = config.from_dict({"eval": {"sample_quality": {"n": 50}, "theory": False, "extra_k": True},
                            "model": {"likelihood": "gaussian_fixed"}, "data": {"binarize": "none"}})
    assert set(cfg.eval.analyses) == {"sample_quality", "extra_k"}
    assert cfg.eval.analyses["sample_quality"].n == 50 and cfg.eval.analyses["extra_k"].ks == (20,)
    assert config.to_dict(cfg)["eval"]["sample_quality"] == {"n": 50, "components": 32}


# ----------------------------------------------------------------------------- overrides


def test_overrides_set_part_parameters_and_switch_parts():
    raw = BINARY | {"model": {"prior": "normal"}, "guide": {"family": "normal"}}
    cfg = config.build(raw, ["model.prior=beta", "model.prior.a=0.5", "guide.family=beta"])
    assert (cfg.model.prior.name, cfg.model.prior.a) == ("beta", 0.5)
    cfg = config.build(BINARY | {"model": {"prior": {"name": "beta", "a": 0.5}}, "guide": {"family": "beta"}},
                       ["model.prior=mixture01", "guide.family=normal"])
    assert cfg.model.prior.name == "mixture01" and cfg.model.prior.scale == 0.1  # a new part: its own defaults
    with pytest.raises(ConfigError, match="not a section"):
        config.build(BINARY | {"train": {"lr": 0.1}}, ["train.lr.x=1"])


def test_a_soft_override_applies_only_where_the_chosen_part_takes_it():
    lowrank = config.build(BINARY | {"guide": {"family": "lowrank"}}, ["guide.family.rank?=3"])
    assert lowrank.guide.family.rank == 3
    assert config.build(BINARY, ["guide.family.rank?=3"]).guide.family.name == "normal"  # skipped
    assert "weight_predictive" not in config.build(BINARY, ["eval.weight_predictive.draws?=3"]).eval.analyses
    with pytest.raises(ConfigError, match="no part there takes 'rnak'"):
        config.build(BINARY, ["guide.family.rnak?=3"])


def test_an_experiment_extends_another_table_by_table(tmp_path):
    k5 = study.read("burda_iwae_k5")  # bundled: the Burda protocol of burda_vae, another estimator
    vae = study.read("burda_vae")
    assert (k5.name, k5.base["estimator"]) == ("burda_iwae_k5", {"name": "iwae", "k": 5})
    assert all(k5.base[s] == vae.base[s] for s in ("data", "model", "guide", "train", "eval"))
    assert k5.variants == vae.variants and k5.scales["smoke"] == vae.scales["smoke"]
    (tmp_path / "base.toml").write_text('[train]\nlr = 0.1\nepochs = 3\n[study.scales]\nsmoke = ["a=1"]\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nepochs = 7\n')
    merged = config.read_experiment(tmp_path / "child.toml")
    assert merged == {"train": {"lr": 0.1, "epochs": 7}, "study": {"scales": {"smoke": ["a=1"]}}}
    (tmp_path / "base.toml").write_text('extends = "child.toml"\n')
    with pytest.raises(ConfigError, match="leads back to itself"):
        config.read_experiment(tmp_path / "child.toml")
    (tmp_path / "child.toml").write_text('extends = "no_such_protocol"\n')
    with pytest.raises(ConfigError, match="No bundled experiment named 'no_such_protocol'"):
        config.read_experiment(tmp_path / "child.toml")


# ----------------------------------------------------------------------------- 0.1's flat keys


@pytest.mark.parametrize("folder", sorted(p.name for p in FIXTURES.iterdir()))
def test_a_config_written_by_ppvae_0_1_reads_as_part_tables(folder, caplog):
    raw = json.loads((FIXTURES / folder / runs.CONFIG).read_text())
    assert "prior_a" in raw["model"]  # the flat format
    with caplog.at_level(logging.WARNING):
        cfg = config.from_dict(raw)
    (notice,) = [r.message for r in caplog.records if "ppvae 0.1's flat keys" in r.message]
    assert "\n" not in notice and "read as part parameters" in notice
    if folder == "beta_kumaraswamy":
        assert (cfg.model.prior.name, cfg.model.prior.a, cfg.guide.family.name) == ("beta", 0.3, "kumaraswamy")
        assert cfg.eval.analyses["extra_k"].ks == (5,)
    else:
        assert (cfg.model.likelihood.name, cfg.model.likelihood.sigma) == ("gaussian_fixed", 0.5)
        assert (cfg.guide.family.name, cfg.guide.family.rank) == ("lowrank", 2)
        assert (cfg.estimator.name, cfg.estimator.k) == ("iwae", 3) and "num_particles" not in cfg.estimator.params
    assert config.from_dict(config.to_dict(cfg)) == cfg


def test_flat_overrides_of_0_1_still_work_and_win_over_the_file():
    cfg = config.build(BINARY | {"model": {"prior": {"name": "beta", "a": 0.5}}, "guide": {"family": "beta"}},
                       ["model.prior_a=0.7", "eval.sample_quality=0", "eval.extra_k=[20]"])
    assert cfg.model.prior.a == 0.7 and cfg.eval.analyses["extra_k"].ks == (20,)
    cfg = config.build(BINARY | {"eval": {"gradient_study": True, "gradient_ks": [1, 2]}})
    assert cfg.eval.analyses["gradient_study"].ks == (1, 2)


# ----------------------------------------------------------------------------- plugins and keys


PLUGIN = '''
from typing import Annotated
import pyro.distributions as dist
import torch
from torch import nn
from ppvae import registry
from ppvae.registry import Param


@registry.register("prior", "laplace_test_plugin")
class LaplacePrior(nn.Module):
    """p(z) = prod_j Laplace(0, b): a prior of a user's own, from a plugin file."""

    def __init__(self, latent_dim: int, *, b: Annotated[float, Param("> 0", "scale")] = 1.0):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("b", torch.tensor(float(b)))

    def forward(self):
        return dist.Laplace(torch.zeros(self.latent_dim, device=self.b.device), self.b).to_event(1)
'''


def test_a_plugin_file_registers_a_part_a_config_can_name(tmp_path):
    path = tmp_path / "my_parts.py"
    path.write_text(PLUGIN)
    cfg = config.from_dict(BINARY | {"plugins": [str(path)], "model": {"prior": {"name": "laplace_test_plugin", "b": 0.5}}})
    assert cfg.model.prior.b == 0.5 and registry.entry("prior", "laplace_test_plugin").doc.startswith("p(z) = prod_j")
    with pytest.raises(ConfigError, match="does not exist"):
        config.from_dict(BINARY | {"plugins": [str(tmp_path / "nope.py")]})


def test_keys_list_every_parameter_with_its_real_default_in_toml():
    rows = {key: (default, doc) for key, default, doc in config.keys()}
    mlp = {key: default for key, default, doc in config.keys() if "(network 'mlp')" in doc}
    assert mlp["model.top.hidden"] == "[100, 100]" and mlp["model.decoder.hidden"] == "[256]"  # each place's own
    assert rows["data.download"][0] == "true" and rows["train.optimizer"][0] == '"adam"'
    assert "(prior 'beta')" in rows["model.prior.a"][1] and rows["eval.gradient_study.ks"][0] == "[1, 5, 50]"
    for e in registry.entries("likelihood"):  # every part's parameters, from the registry alone
        assert all(f"model.likelihood.{f.name}" in rows for f in e.fields)


def test_run_folder_name_is_safe_whatever_the_experiment_name(tmp_path):
    path = runs.new_run_dir(tmp_path, "../../escape/\x00 me")
    assert path.parent == tmp_path and path.name.startswith("_.._escape__ me-".replace(" ", "_"))


# ----------------------------------------------------------------------------- property: mangled configs

BASE = {
    "name": "fuzz",
    "description": "tiny run for the config fuzz test",
    "data": {"name": "digits", "binarize": "dynamic", "max_train": 48, "max_test": 16, "test_fraction": 0.2,
             "seed": 0, "download": False, "data_dir": ""},
    "model": {"latent_dim": 2, "likelihood": {"name": "bernoulli"}, "prior": {"name": "normal"},
              "decoder": {"name": "mlp", "hidden": [8], "activation": "tanh"}},
    "guide": {"family": {"name": "normal"}, "encoder": {"name": "mlp", "hidden": [8], "activation": "tanh"}},
    "estimator": {"name": "trace", "num_particles": 1, "beta": 1.0, "beta_start": 1.0, "anneal_epochs": 0},
    "train": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, "epochs": 1, "seed": 0,
              "device": "cpu"},
    "eval": {"k": 2, "num_test": 8, "chunk_size": 0},
}
# Never mangled: they keep the test offline (no download attempts) and fast.
PINNED = {("data", "download"), ("data", "data_dir")}


def _paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in node.items():
        path = prefix + (key,)
        if path not in PINNED:
            out.append(path)
        if isinstance(value, dict):
            out += _paths(value, path)
    return out


PATHS = _paths(BASE)
CHOICES = sorted({c for _, _, doc in config.keys() if "one of " in doc
                  for c in doc.split("one of ")[1].split(";")[0].split("|")})

values = st.one_of(
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e-30, 1e30, 0.5, 50.0]),
    st.text(max_size=12),
    st.sampled_from(CHOICES),  # valid names in the wrong places, and new combinations of valid parts
    st.booleans(),
    st.lists(st.integers(-2, 24), max_size=5),
    st.just({}),
)
mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(PATHS)),
    st.tuples(st.just("rename"), st.sampled_from(PATHS), st.text(min_size=1, max_size=10)),
    st.tuples(st.just("set"), st.sampled_from(PATHS), values),
)


def mangle(raw: dict, mutation: tuple) -> None:
    kind, path, *arg = mutation
    node = raw
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return  # an earlier mutation replaced or removed this section
    if path[-1] not in node:
        return
    if kind == "drop":
        del node[path[-1]]
    elif kind == "rename":
        node[arg[0]] = node.pop(path[-1])
    else:
        node[path[-1]] = arg[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutations, min_size=1, max_size=3))
def test_mangled_config_is_a_short_run_or_a_clear_error(mutation_list):
    raw = copy.deepcopy(BASE)
    for mutation in mutation_list:
        mangle(raw, mutation)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PPVAE_DATA", tmp)
        mp.setattr(experiment, "run_figures", lambda *args: [])  # plotting is tested elsewhere and slow here
        if isinstance(raw.get("data"), dict) and "data_dir" in raw["data"]:
            raw["data"]["data_dir"] = tmp
        try:
            run_dir = experiment.run(config.from_dict(raw), out=Path(tmp) / "runs")
        except PPVAEError as e:
            assert str(e).strip(), type(e)
            return
        assert (run_dir / runs.METRICS).is_file()


# ----------------------------------------------------------------------------- fuzzed TOML files

STUDY_TOML = Path(config.resolve_experiment("burda_vae")).read_bytes()  # wherever the package is installed
text_edits = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, len(STUDY_TOML)), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.integers(0, len(STUDY_TOML)),
              st.sampled_from([b"\xff\xfe", b"[", b"]]", b"[study]\n", b"[study.vary]\nseeds = 3\n", b"seeds = 5\n",
                               b"vary = [1]\n", b"scales = \"cpu\"\n", b"[train.lr]\n", b"= 1\n", b"\"", b"\n[[model]]\n",
                               b"extends = 5\n", b"extends = \"burda_vae\"\n", b"variants = 3\n", b"\x00"])),
)


names = st.sampled_from(["cpu", "smoke", "one_layer", "set", "vary", "train.epochs", "x"])
toml_values = st.recursive(
    st.one_of(st.integers(-2, 5), st.booleans(), st.sampled_from(["cpu", "train.epochs=1", "{run:one_layer}", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)
study_tables = st.dictionaries(st.sampled_from(["vary", "variants", "seeds", "columns", "scales", "sedes"]),
                               toml_values, min_size=1, max_size=3)


def _study_file(table: dict) -> bytes:
    lines = ['extends = "burda_vae"', "[study]"] + [f"{k} = {registry.toml_value(v)}" for k, v in table.items()]
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(text_edits, min_size=1, max_size=4), study_tables))
def test_a_damaged_experiment_file_is_read_or_refused_in_one_line(tmp_path_factory, edits):
    """Malformed TOML, bytes that are not UTF-8 and wrong nesting, in a study file: it reads and plans, or the error
    is a PPVAEError (one line on the command line), never a traceback."""
    if isinstance(edits, dict):  # a [study] table of any shape on top of a bundled study
        text = _study_file(edits)
    else:
        text = STUDY_TOML
        for kind, at, arg in edits:
            text = text[:at] + text[at + arg:] if kind == "cut" else text[:at] + arg + text[at:]
    path = tmp_path_factory.mktemp("fuzz") / "study.toml"
    path.write_bytes(text)
    try:
        found = study.read(str(path))
        if found is None:
            config.load(str(path))
        else:
            for scale in found.scales or ["smoke"]:
                study.plan(found, scale)
    except PPVAEError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), e
