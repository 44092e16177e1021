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
