"""flowpp-small and tarflow-small through the command line: train, eval, sample, load."""

from __future__ import annotations

import json

import pytest
import torch

import flowkit
from flowkit.distributions import Dequantized

from .conftest import TINY_RUN
from .conftest import flowkit as run_flowkit

# The presets at a width that trains two steps in seconds; everything else as shipped.
SHRINK = {
    "flowpp-small": ["model.filters=4", "model.feature_channels=4", "model.dequantizer_filters=4"],
    "tarflow-small": ["model.channels=8", "model.blocks=2", "model.layers_per_block=1"],
}


@pytest.mark.parametrize("preset", sorted(SHRINK))
def test_a_frontier_preset_trains_evaluates_samples_and_loads(preset, tmp_path):
    output = tmp_path / "run"
    shrink = [item for value in SHRINK[preset] for item in ("--set", value)]
    done = run_flowkit("train", "--preset", preset, *shrink, *TINY_RUN, "--output", output)
    assert done.status == 0, done.stderr
    assert (output / "checkpoint.pt").is_file() and (output / "bpd.png").is_file()
    assert list((output / "samples").glob("*.png"))
    evaluated = run_flowkit("eval", output / "checkpoint.pt", "--num-test", "16", "--json")
    assert evaluated.status == 0, evaluated.stderr
    weighted = run_flowkit(
        "eval", output / "checkpoint.pt", "--num-test", "16", "--samples", "4", "--json"
    )
    single, bound = json.loads(evaluated.stdout), json.loads(weighted.stdout)
    # Four importance-weighted draws give another bound, close to one draw's after two steps
    # (that it is tighter in expectation is tested in tests/test_dequantized.py).
    assert bound["samples"] == 4 and single["samples"] == 1
    assert bound["bits_per_dim"] != single["bits_per_dim"]
    assert (
        abs(bound["bits_per_dim"] - single["bits_per_dim"]) < 0.05 and single["bits_per_dim"] < 16
    )
    grids = tmp_path / "grids"
    sampled = run_flowkit("sample", output / "checkpoint.pt", "--num", "4", "--output", grids)
    assert sampled.status == 0, sampled.stderr
    assert list(grids.glob("*.png"))
    model = flowkit.load(output / "checkpoint.pt")
    if preset == "flowpp-small":
        assert isinstance(model, Dequantized) and model.dequantizer is not None
        images = model.sample(3)
        assert images.dtype == torch.int64 and int(images.min()) >= 0 and int(images.max()) < 256
    else:
        assert model.sample(3).shape == (3, 1, 28, 28)
