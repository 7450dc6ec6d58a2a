"""Angles end to end: ncsf trains on a CSV of angles, unstandardised, then eval, sample, load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import flowkit
from flowkit import cli
from tests.cli.conftest import assert_one_error_line
from tests.cli.conftest import flowkit as run_flowkit
from tests.cli.test_tables import read_csv, write_csv

TINY_NCSF = [
    "--preset",
    "ncsf",
    "--set",
    "model.transforms=2",
    "--set",
    "model.hidden_features=16",
    "--set",
    "model.bins=6",
    "--batch-size",
    "64",
    "--lr",
    "0.01",
    "--no-progress",
    "--device",
    "cpu",
]


def torsions(count: int, seed: int) -> np.ndarray:
    """Two coupled angles whose mass straddles the +-pi seam."""
    rng = np.random.default_rng(seed)
    phi = rng.vonmises(3.0, 4.0, count)
    psi = np.angle(np.exp(1j * (phi + rng.vonmises(0.0, 8.0, count) + 2.0)))
    return np.stack([phi, psi], axis=1)


def test_ncsf_trains_evaluates_samples_and_loads(tmp_path, capsys) -> None:
    data = write_csv(tmp_path / "angles.csv", ["phi", "psi"], torsions(600, seed=0))
    output = tmp_path / "run"
    args = ["train", *TINY_NCSF, "--data", str(data), "--test-fraction", "0.2"]
    assert cli.main([*args, "--output", str(output), "--max-steps", "60"]) == 0
    checkpoint = output / "checkpoint.pt"

    # Stored as angles: unit statistics for the data, the flow's support the torus.
    recorded = torch.load(checkpoint, weights_only=False)
    statistics = recorded["data"]["standardization"]
    assert statistics["mean"] == [0.0, 0.0] and statistics["std"] == [1.0, 1.0]

    # Test NLL well below the uniform density's 2 log(2 pi) nats.
    capsys.readouterr()
    assert cli.main(["eval", str(checkpoint), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 120
    assert report["nll"] < 2 * math.log(2 * math.pi) - 1.0, report

    # Samples are angles, with the column names.
    target = tmp_path / "samples.csv"
    assert cli.main(["sample", str(checkpoint), "--num", "200", "--output", str(target)]) == 0
    columns, values = read_csv(target)
    assert columns == ["phi", "psi"] and values.shape == (200, 2)
    assert bool(((values >= -math.pi) & (values < math.pi)).all())

    # flowkit.load rebuilds the model, which scores the file's rows as eval did.
    flow = flowkit.load(checkpoint)
    rows = torch.as_tensor(read_csv(data)[1])
    test_rows = recorded["data"]["split"]["test"]
    nll = -float(flow.log_prob(rows[test_rows]).mean())
    assert abs(nll - report["nll"]) < 1e-4


def test_angles_outside_the_circle_are_one_line(tmp_path) -> None:
    values = torsions(100, seed=1)
    values[7, 1] = 4.5  # degrees-like or unwrapped: outside [-pi, pi)
    data = write_csv(tmp_path / "angles.csv", ["phi", "psi"], values)
    result = run_flowkit(
        "train", *TINY_NCSF, "--data", data, "--test-fraction", "0.2", "--output", tmp_path / "r"
    )
    assert_one_error_line(result, 2, "[-3.14159, 3.14159)", "4.5", "row 7", "'psi'")
    assert not Path(tmp_path / "r" / "checkpoint.pt").exists()
