"""Tables end to end: train a flow on a CSV, evaluate it against a Gaussian fit, sample rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flowkit import cli
from tests.cli.conftest import flowkit

# Small spline flows that learn these densities in a few hundred CPU steps.
TINY_NSF = [
    "--preset",
    "nsf",
    "--set",
    "model.transforms=2",
    "--set",
    "model.hidden_features=32",
    "--batch-size",
    "128",
    "--lr",
    "0.005",
    "--no-progress",
    "--device",
    "cpu",
]


def write_csv(path: Path, columns: list[str], values: np.ndarray) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(values.tolist())
    return path


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def ring(count: int, seed: int) -> np.ndarray:
    """Points near the circle of radius 2: far from any Gaussian."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = 2 + 0.1 * rng.standard_normal(count)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean NLL (nats) of ``test`` under the maximum-likelihood Gaussian fit to ``train``."""
    mean = train.mean(axis=0)
    covariance = np.cov(train, rowvar=False, bias=True)
    centred = test - mean
    mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(covariance), centred)
    _, log_det = np.linalg.slogdet(covariance)
    return float(np.mean(0.5 * (mahalanobis + log_det + train.shape[1] * np.log(2 * np.pi))))


@pytest.fixture
def ring_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "train.csv", ["a", "b"], ring(200, seed=0))


def test_table_round_trip(tmp_path, capsys):
    train, test = ring(2400, seed=0), ring(600, seed=1)
    write_csv(tmp_path / "train.csv", ["a", "b"], train)
    write_csv(tmp_path / "test.csv", ["a", "b"], test)
    output = tmp_path / "run"
    result = flowkit(
        "train",
        *TINY_NSF,
        "--data",
        tmp_path / "train.csv",
        "--test-data",
        tmp_path / "test.csv",
        "--output",
        output,
        "--max-steps",
        "80",
    )
    assert result.status == 0, result.stderr
    checkpoint = output / "checkpoint.pt"

    # The flow's test NLL (nats per example, the data's units) beats the best Gaussian's.
    result = flowkit("eval", checkpoint, "--json")
    assert result.status == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["examples"] == len(test) and "bits_per_dim" not in report
    baseline = gaussian_nll(train, test)
    assert report["nll"] < baseline - 1.0, (report["nll"], baseline)

    # Samples are rows with the column names, near the ring.
    target = tmp_path / "out" / "samples.csv"
    assert cli.main(["sample", str(checkpoint), "--num", "300", "--output", str(target)]) == 0
    columns, values = read_csv(target)
    assert columns == ["a", "b"] and values.shape == (300, 2)
    assert abs(np.median(np.hypot(values[:, 0], values[:, 1])) - 2) < 0.3
    # Without --output the rows go next to the checkpoint, never into the working directory.
    assert cli.main(["sample", str(checkpoint), "--num", "5"]) == 0
    printed = Path(capsys.readouterr().out.split()[-1])
    assert printed == output / "samples" / "samples.csv" and read_csv(printed)[1].shape == (5, 2)

    # The run's config.json repeats the run.
    assert cli.main(["train", "--config", str(output / "config.json"), "--print-config"]) == 0
    repeated = json.loads(capsys.readouterr().out)
    recorded = json.loads((output / "config.json").read_text())
    for key in ("preset", "model_name", "model", "train", "test_data"):
        assert repeated[key] == recorded[key], key
    assert repeated["model"]["features"] == 2 and repeated["model"]["context_features"] is None

    # Image commands say they need an image model.
    status = cli.main(["interpolate", str(checkpoint)])
    assert status == 2 and "image models" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, fragments",
    [
        ([], ["--test-data", "--test-fraction"]),
        (["--test-fraction", "0.2", "--set", "model.features=3"], ["model.features", "2"]),
        (["--test-fraction", "0.2", "--columns", "a", "--context-columns", "a"], ["'a'"]),
    ],
)
def test_table_settings_are_checked(ring_csv, tmp_path, capsys, extra, fragments):
    args = [
        "train",
        *TINY_NSF,
        "--data",
        str(ring_csv),
        "--output",
        str(tmp_path / "o"),
    ]
    status = cli.main([*args, *extra, "--print-config"])
    line = capsys.readouterr().err.strip()
    assert status in (1, 2) and len(line.splitlines()) == 1 and line.startswith("flowkit: error:")
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not (tmp_path / "o").exists()


def test_conditional_samples_move_with_the_context(tmp_path, capsys):
    rng = np.random.default_rng(0)
    context = rng.uniform(-1, 1, 2000)
    values = np.stack(
        [3 * context + 0.1 * rng.standard_normal(2000), 0.1 * rng.standard_normal(2000), context],
        axis=1,
    )
    data = write_csv(tmp_path / "data.csv", ["y", "z", "c"], values)
    output = tmp_path / "run"
    result = flowkit(
        "train",
        *TINY_NSF,
        "--data",
        data,
        "--context-columns",
        "c",
        "--test-fraction",
        "0.2",
        "--output",
        output,
        "--max-steps",
        "80",
    )
    assert result.status == 0, result.stderr
    checkpoint = str(output / "checkpoint.pt")
    means = {}
    for c in (-1, 1):
        target = tmp_path / f"c{c}.csv"
        args = [
            "sample",
            checkpoint,
            "--num",
            "400",
            "--context",
            f"c={c}",
            "--output",
            str(target),
        ]
        assert cli.main(args) == 0
        columns, rows = read_csv(target)
        assert columns == ["y", "z", "c"] and np.all(rows[:, 2] == c)
        means[c] = rows[:, 0].mean()
    assert abs(means[1] - means[-1] - 6) < 1.0, means
    capsys.readouterr()
    for context_args, fragment in (
        ([], "--context c=VALUE"),
        (["--context", "d=1"], "'d' is not a context column"),
        (["--context", "c=1", "c=2"], "twice"),
        (["--context", "c=inf"], "finite"),
    ):
        assert cli.main(["sample", checkpoint, *context_args]) == 2
        assert fragment in capsys.readouterr().err
