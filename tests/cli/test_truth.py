"""The command line tells the truth: defaults shown, values checked once, results never replaced."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowkit import cli
from tests.cli.conftest import ROOT

# A spline flow small enough to train a few steps in a fraction of a second.
TINY_TABLE = [
    "--preset",
    "nsf",
    "--set",
    "model.transforms=1",
    "--set",
    "model.hidden_features=8",
    "--batch-size",
    "32",
    "--max-steps",
    "2",
    "--no-progress",
    "--device",
    "cpu",
]


def write_csv(path: Path, columns: list[str], rows: np.ndarray) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(rows.tolist())
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    rows = np.random.default_rng(0).standard_normal((100, 3))
    return write_csv(tmp_path / "train.csv", ["a", "b", "c"], rows)


def one_error(capsys, *args: object) -> tuple[int, str]:
    """``flowkit ARGS`` in this process: its status and its only stderr line, an error."""
    status = cli.main([str(arg) for arg in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("flowkit: error: "), lines[0]
    return status, lines[0]


def train_table(capsys, table: Path, output: Path, *extra: object) -> None:
    args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", "--output", output]
    status = cli.main([str(arg) for arg in [*args, *extra]])
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()


# --- the end of a pipe -------------------------------------------------------------------------
def test_a_closed_pipe_ends_the_command_quietly():
    read_end, write_end = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "flowkit", "presets"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=env,
    )
    # The reader is gone before the command writes anything, as after 'head' has had its lines.
    os.close(write_end)
    os.close(read_end)
    _, err = process.communicate(timeout=60)
    assert err == b""
    assert process.returncode == 141


# --- a finished run is never started over ---------------------------------------------------
def test_resume_without_the_checkpoint_refuses_and_keeps_the_metrics(table, tmp_path, capsys):
    output = tmp_path / "run"
    train_table(capsys, table, output)
    (output / "checkpoint.pt").unlink()
    metrics = (output / "metrics.jsonl").read_text()
    args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", "--output", output]
    status, line = one_error(capsys, *args, "--resume")
    assert status == 1
    assert "checkpoint.pt" in line and "--overwrite" in line
    assert (output / "metrics.jsonl").read_text() == metrics
    assert not (output / "checkpoint.pt").exists()
