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

# Test tensors are small, so intra-op threads gain little; on a busy machine, OpenMP threads that
# wait for a descheduled sibling made a two-core run many times slower than one thread. Python
# subprocesses started by tests read OMP_NUM_THREADS, so they compute with the same reduction order
# as this process and their results agree bit for bit.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
