"""Config validation: every bad value is refused with a message naming the key, and no config,
however mangled, gets past ppvae as anything but a short run or one of its own errors."""

import copy
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppvae import config, experiment, runs
from ppvae.errors import ConfigError, PPVAEError

# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("raw, fragment", [
    ({"trian": {"lr": 0.1}}, "Unknown config key 'trian'. Did you mean 'train'?"),
    ({"train": {"learning_rate": 0.1}}, "Unknown config key 'train.learning_rate'."),
    ({"model": {"decoder": {"hiden": [8]}}}, "Did you mean 'model.decoder.hidden'?"),
    ({"train": 5}, "[train] must be a table"),
    ({"train": {"epochs": True}}, "train.epochs = True has the wrong type: expected int"),
    ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 has the wrong type: expected int"),
    ({"train": {"lr": "fast"}}, "train.lr = 'fast' has the wrong type: expected float"),
    ({"train": {"lr": 0}}, "train.lr = 0.0 is invalid: it must be > 0"),
    ({"estimator": {"beta": math.inf}}, "estimator.beta = inf is invalid: it must be a finite number"),
    ({"estimator": {"alpha": math.nan}}, "must be a finite number"),
    ({"estimator": {"alpha": 1}}, "estimator.alpha = 1.0 is invalid: it must be != 1"),
    ({"train": {"seed": -1}}, "train.seed = -1 is invalid: it must be in [0, 4294967295]"),
    ({"train": {"seed": 2**32}}, "it must be in [0, 4294967295]"),
    ({"data": {"test_fraction": 1.0}}, "data.test_fraction = 1.0 is invalid: it must be in (0, 1)"),
    ({"guide": {"encoder": {"hidden": [8, 0]}}}, "guide.encoder.hidden = [8, 0] must be a list of positive integers"),
    ({"model": {"decoder": {"hidden": [8] * 5}}}, "an MLP takes 0 to 4 hidden layers"),
])
def test_invalid_config_is_refused_with_the_key_named(raw, fragment):
    with pytest.raises(ConfigError) as e:
        config.from_dict(raw)
    assert fragment in str(e.value)


def test_range_bounds_are_inclusive_only_where_written_so():
    assert config.from_dict({"train": {"seed": 0}}).train.seed == 0
    assert config.from_dict({"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1
    assert config.from_dict({"data": {"test_fraction": 0.5}}).data.test_fraction == 0.5


def test_run_folder_name_is_safe_whatever_the_experiment_name(tmp_path):
    path = runs.new_run_dir(tmp_path, "../../escape/\x00 me")
    assert path.parent == tmp_path and path.name.startswith("_.._escape__ me-".replace(" ", "_"))


# ----------------------------------------------------------------------------- property: mangled configs

BASE = {
    "name": "fuzz",
    "description": "tiny run for the config fuzz test",
    "data": {"name": "digits", "binarize": "dynamic", "max_train": 48, "max_test": 16, "test_fraction": 0.2,
             "seed": 0, "download": False, "data_dir": ""},
    "model": {"latent_dim": 2, "likelihood": "bernoulli", "sigma": 1.0, "prior": "normal",
              "decoder": {"kind": "mlp", "hidden": [8], "activation": "tanh"}},
    "guide": {"family": "normal", "encoder": {"kind": "mlp", "hidden": [8], "activation": "tanh"}},
    "estimator": {"name": "trace", "num_particles": 1, "k": 2, "alpha": 0.5, "gradient": "standard",
                  "beta": 1.0, "beta_start": 1.0, "anneal_epochs": 0, "strict": False},
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
CHOICES = sorted({str(c) for _, _, doc in config.field_docs() if "one of " in doc
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
        mp.setattr(experiment, "figures", lambda *args: [])  # plotting is tested elsewhere and slow here
        if isinstance(raw.get("data"), dict) and "data_dir" in raw["data"]:
            raw["data"]["data_dir"] = tmp
        try:
            run_dir = experiment.run(config.from_dict(raw), out=Path(tmp) / "runs")
        except PPVAEError as e:
            assert str(e).strip(), type(e)
            return
        assert (run_dir / runs.METRICS).is_file()
