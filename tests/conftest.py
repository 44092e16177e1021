import os

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    """Each test starts with an empty param store and fixed seeds."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Nothing a test trains (e.g. the sample-quality feature net) is cached in the user's home."""
    old = os.environ.get("PPVAE_CACHE")
    os.environ["PPVAE_CACHE"] = str(tmp_path_factory.mktemp("ppvae-cache"))
    yield
    if old is None:
        os.environ.pop("PPVAE_CACHE")
    else:
        os.environ["PPVAE_CACHE"] = old


@pytest.fixture(scope="session")
def study_smoke(tmp_path_factory):
    """``study_smoke(name)``: the folder of a bundled study's smoke scale, run once per session and
    shared by the generic study test and the study's own focused tests."""
    from ppvae.studies import study

    folders = {}

    def run(name):
        if name not in folders:
            folders[name] = study.run(name, "smoke", out=tmp_path_factory.mktemp(name))
        return folders[name]

    return run
