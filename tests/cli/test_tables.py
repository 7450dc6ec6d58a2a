"""Tables end to end: train a flow on a CSV, evaluate it against a Gaussian fit, sample rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit import cli
from tests.cli.conftest import assert_one_error_line, flowkit

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
        (
            ["--test-fraction", "0.2", "--val-fraction", "0", "--patience", "5"],
            ["--patience 5", "--val-fraction 0"],
        ),
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


# The tabular protocol on a small table, with the nsf preset's own batch size (256).
TINY_PROTOCOL = [
    "--preset",
    "nsf",
    "--set",
    "model.transforms=1",
    "--set",
    "model.hidden_features=16",
    "--set",
    "train.log_every=1",
    "--lr",
    "0.01",
    "--patience",
    "2",
    "--no-progress",
    "--device",
    "cpu",
]


def _records(path: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock times."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("time", None)
    return records


def test_a_small_table_follows_the_validation_protocol_and_reruns_identically(tmp_path):
    data = write_csv(tmp_path / "small.csv", ["a", "b"], ring(142, seed=3))
    runs = []
    for name in ("first", "second"):
        output = tmp_path / name
        result = flowkit(
            "train",
            *TINY_PROTOCOL,
            "--data",
            data,
            "--test-fraction",
            "0.2",
            "--seed",
            "5",
            "--max-steps",
            "2000",
            "--output",
            output,
        )
        assert result.status == 0, result.stderr
        runs.append(output)
    # 142 rows: 28 test, 11 validation, 103 training rows; batch 256 becomes 25, said once.
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "256 -> 25" in notes[0] and "103 training rows" in notes[0]
    first, second = (_records(output / "metrics.jsonl") for output in runs)
    assert first == second

    # Early stopping ended the run well before the step cap, two epochs after the best one.
    best = first[-1]
    assert best["event"] == "best" and best["stopped_early"] is True
    assert best["step"] < 2000 and best["epoch"] == best["best_epoch"] + 2
    validation = [(r["val_nll"], r["step"]) for r in first if "val_nll" in r]
    assert min(validation) == (best["best_val_nll"], best["best_step"])
    at_best = [r for r in first if "val_nll" in r and r["step"] == best["best_step"]]
    assert at_best[0]["test_nll"] == best["best_test_nll"]
    assert f"test NLL (nats per example) {best['best_test_nll']:.4f} there" in result.stdout

    # eval, sample and load default to the best weights; eval reproduces the recorded values on
    # exactly the recorded rows.
    checkpoint = runs[0] / "checkpoint.pt"
    for split, key, rows in (("test", "best_test_nll", 28), ("validation", "best_val_nll", 11)):
        report = json.loads(flowkit("eval", checkpoint, "--split", split, "--json").stdout)
        assert report["examples"] == rows and report["weights"] == "best"
        assert abs(report["nll"] - best[key]) < 1e-9, (split, report, best)
    last = json.loads(flowkit("eval", checkpoint, "--weights", "averaged", "--json").stdout)
    assert last["nll"] != best["best_test_nll"]

    # A changed file is refused in one line; asked to, eval scores the recorded rows anyway.
    with open(data, "a") as file:
        file.write("0.5,0.5\n")
    refused = flowkit("eval", checkpoint)
    assert_one_error_line(refused, 2, str(data), "changed", "--allow-changed-data")
    report = json.loads(flowkit("eval", checkpoint, "--allow-changed-data", "--json").stdout)
    assert abs(report["nll"] - best["best_test_nll"]) < 1e-9


def test_the_seed_sets_the_model(tmp_path):
    data = write_csv(tmp_path / "small.csv", ["a", "b"], ring(142, seed=3))
    losses = {}
    for seed in (5, 6):
        output = tmp_path / f"seed{seed}"
        args = ["--data", data, "--test-fraction", "0.2", "--max-steps", "4", "--output", output]
        result = flowkit("train", *TINY_PROTOCOL, *args, "--seed", str(seed))
        assert result.status == 0, result.stderr
        losses[seed] = [
            r["train_nll"] for r in _records(output / "metrics.jsonl") if "train_nll" in r
        ]
    assert len(losses[5]) == 4 and losses[5] != losses[6]


def test_a_column_of_1e9_plus_small_variation_keeps_its_variation(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 400))
    values = np.stack([1e9 + 1e-3 * a, b + 0.5 * a], axis=1)
    data = tmp_path / "big.csv"
    np.savetxt(data, values, delimiter=",", header="big,y", comments="", fmt="%.17g")
    output = tmp_path / "run"
    args = ["--data", data, "--test-fraction", "0.25", "--max-steps", "2", "--output", output]
    result = flowkit("train", *TINY_PROTOCOL, *args)
    assert result.status == 0, result.stderr
    checkpoint = output / "checkpoint.pt"
    nll = {
        dtype: json.loads(flowkit("eval", checkpoint, "--dtype", dtype, "--json").stdout)["nll"]
        for dtype in ("float32", "float64")
    }
    # The run's own split, and the best Gaussian fitted in float64 to its training rows.
    state = torch.load(checkpoint, weights_only=True)
    split = state["data"]["split"]
    train = values[split["train"].numpy()]
    test = values[split["test"].numpy()]
    baseline = gaussian_nll(train, test)  # about -5.9 nats: log(1e-3) per example, and more
    # An almost untrained flow on standardised rows is a diagonal Gaussian: within the
    # correlation's share (0.11 nats) of the full-covariance fit.
    assert abs(nll["float32"] - baseline) < 0.3, (nll, baseline)
    assert abs(nll["float32"] - nll["float64"]) < 1e-3, nll
    assert state["data"]["standardization"]["mean"][0] == pytest.approx(1e9, abs=1e-2)
    # Sampled rows keep the column's small variation too (float32 would round it to steps of 64).
    rows = tmp_path / "rows.csv"
    assert flowkit("sample", checkpoint, "--num", "200", "--output", rows).status == 0
    _, sampled = read_csv(rows)
    spread = np.std(sampled[:, 0] - 1e9)
    assert 1e-4 < spread < 1e-2, spread


def test_a_constant_column_is_one_error_naming_it(tmp_path):
    values = np.column_stack([ring(50, seed=0), np.full(50, 7.0)])
    data = write_csv(tmp_path / "flat.csv", ["a", "b", "flat"], values)
    args = ["--data", data, "--test-fraction", "0.2", "--output", tmp_path / "o"]
    result = flowkit("train", *TINY_PROTOCOL, *args)
    assert_one_error_line(result, 1, "'flat'", "constant")


def test_no_validation_rows_turn_the_presets_early_stopping_off(ring_csv, tmp_path, capsys):
    args = ["train", *TINY_NSF, "--data", str(ring_csv), "--test-fraction", "0.2"]
    assert cli.main([*args, "--output", str(tmp_path / "o"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["patience"] == 30
    args += ["--val-fraction", "0", "--output", str(tmp_path / "o"), "--print-config"]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)["train"]
    assert printed["val_fraction"] == 0 and printed["patience"] is None


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_array_tables_train_evaluate_and_sample_through_the_command_line(tmp_path, suffix):
    # The table formats besides CSV, as numpy writes them: a 2-D .npy (columns x0, x1, ...) and
    # an .npz of one array per column.
    values = ring(200, seed=3)
    path = tmp_path / f"table{suffix}"
    if suffix == ".npy":
        np.save(path, values)
        columns = ["x0", "x1"]
    else:
        np.savez(path, a=values[:, 0], b=values[:, 1])
        columns = ["a", "b"]
    output = tmp_path / "run"
    args = ["--data", path, "--test-fraction", "0.25", "--max-steps", "4", "--output", output]
    result = flowkit("train", *TINY_PROTOCOL, *args)
    assert result.status == 0, result.stderr
    checkpoint = output / "checkpoint.pt"
    report = json.loads(flowkit("eval", checkpoint, "--json").stdout)
    assert report["examples"] == 50
    rows = tmp_path / "rows.csv"
    assert flowkit("sample", checkpoint, "--num", "7", "--output", rows).status == 0
    names, sampled = read_csv(rows)
    assert names == columns and sampled.shape == (7, 2)
