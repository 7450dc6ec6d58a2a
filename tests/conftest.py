"""Shared test configuration: hypothesis profiles, torch threads, fixed seeds."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# "dev" is quick for local runs; CI (which sets CI=true) runs the thorough "ci" profile. Both
# are derandomized: the examples follow from each test's name, so a local run and CI draw the same
# ones and a failure seen once is seen again.
settings.register_profile(
    "dev",
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
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

# The tests run many tiny tensor operations, which extra intra-op threads only slow down (on a
# shared or busy machine, by orders of magnitude, as idle threads spin waiting for work). Python
# subprocesses started by tests read OMP_NUM_THREADS, so they compute with the same reduction order
# as this process and their results agree bit for bit.
_THREADS = os.environ.get("FLOWKIT_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = _THREADS
torch.set_num_threads(int(_THREADS))


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
