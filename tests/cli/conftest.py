"""Runs the ``flowkit`` command as a user would: a fresh interpreter, and a tiny trained Glow."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The smallest run of an image preset that trains end to end: 128 images, 2 steps.
TINY_RUN = [
    "--set",
    "train.num_train=128",
    "--set",
    "train.num_test=64",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.init_batch_size=64",
    "--set",
    "train.num_samples=4",
    "--set",
    "train.temperatures=[0.7]",
    "--max-steps",
    "2",
    "--no-progress",
    "--device",
    "cpu",
]
# ... of Glow: one step per level, width 8.
TINY_GLOW = [
    "--preset",
    "glow-small",
    "--set",
    "model.K=1",
    "--set",
    "model.hidden_channels=8",
    *TINY_RUN,
]


@dataclass
class Completed:
    """What a finished ``flowkit`` process left behind."""

    status: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def flowkit(*args: str, cwd: Path | None = None, timeout: float = 120) -> Completed:
    """Run ``python -m flowkit ARGS`` with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    process = subprocess.run(
        [sys.executable, "-m", "flowkit", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Completed(process.returncode, process.stdout, process.stderr)


def assert_one_error_line(result: Completed, status: int, *fragments: str) -> str:
    """The process failed with ``status`` and one ``flowkit: error:`` line naming all fragments."""
    assert result.status == status, (result.status, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("flowkit: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture(scope="session")
def glow_run(tmp_path_factory) -> Path:
    """The directory of a tiny Glow trained for two steps on the bundled Fashion-MNIST subset."""
    output = tmp_path_factory.mktemp("glow") / "run"
    result = flowkit("train", *TINY_GLOW, "--output", output)
    assert result.status == 0, result.stderr
    return output
