"""Shared test configuration: hypothesis profiles, torch threads, fixed seeds."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# "dev" is quick for local runs; CI (which sets CI=true) runs the thorough "ci" profile.
settings.register_profile(
    "dev", max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Test tensors are tiny: a second intra-op thread only adds start-up and spin-waiting, which
    # on a busy machine makes small ops (and vmap'd Jacobians) orders of magnitude slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
