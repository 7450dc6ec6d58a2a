"""The tabular protocol on scikit-learn's bundled tables: flowkit's nsf preset, a Gaussian, zuko.

    nice python -m benchmarks.tabular [--tables breast_cancer,wine] [--seed 0] [--no-zuko]
                                      [--no-rerun] [--json results.json]

For each table (``load_breast_cancer``: 569 rows x 30 columns; ``load_wine``: 178 x 13), the
features are written to a CSV and trained with the command a user would type,
``flowkit train --preset nsf --data table.csv --test-fraction 0.2``, all other settings the
preset's defaults (a validation split of 10% of the training rows, early stopping after 30 epochs
without improvement, the best validation weights kept). The reported number is the test NLL (nats
per row, in the table's units) at the best validation step, read from the run's metrics.

It is compared, on exactly the run's rows (the train/validation/test row indices stored in its
checkpoint) and in the same units, with

* a full-covariance Gaussian fitted by maximum likelihood to the run's training rows;
* zuko's NSF (``zuko.flows.NSF``: autoregressive rational-quadratic splines, 5 transforms of
  width 128 x 128, as the preset's sizes) trained by the same protocol: the run's
  standardisation, Adam at 1e-3, the run's batch size, evaluation on the validation rows every
  epoch, patience 30, at most 1000 epochs and 100,000 steps, the test NLL at the best validation
  epoch.

With rerun on (the default), the flowkit command runs twice with the same seed and the two
metrics.jsonl files must agree value for value (wall-clock times aside). This measures quality,
not speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("breast_cancer", "wine")
# The protocol's settings, as the table presets set them (flowkit/presets/runs.py).
PATIENCE = 30
MAX_EPOCHS = 1000
MAX_STEPS = 100_000
LR = 1e-3


def write_table(name: str, folder: Path) -> Path:
    """The table's features as a CSV with a header (numbers written to round-trip exactly)."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    columns = [f"c{index}" for index in range(bunch.data.shape[1])]
    path = folder / f"{name}.csv"
    np.savetxt(path, bunch.data, delimiter=",", header=",".join(columns), comments="", fmt="%.17g")
    return path


def run_flowkit(data: Path, output: Path, seed: int) -> dict[str, Any]:
    """Train with the preset's defaults in a fresh process; the run's records and split."""
    import torch

    command = [
        sys.executable,
        "-m",
        "flowkit",
        "train",
        "--preset",
        "nsf",
        "--data",
        str(data),
        "--test-fraction",
        "0.2",
        "--seed",
        str(seed),
        "--output",
        str(output),
        "--no-progress",
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"flowkit train failed: {completed.stderr.strip()}")
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(output / "checkpoint.pt", weights_only=True)
    split = {key: value.numpy() for key, value in state["data"]["split"].items()}
    return {
        "records": records,
        "best": records[-1],
        "split": split,
        "batch_size": state["train_config"]["batch_size"],
        "summary": completed.stdout.strip(),
        "note": completed.stderr.strip(),
    }


def without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in record.items() if key != "time"} for record in records]


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean NLL of ``test`` under the maximum-likelihood Gaussian of ``train`` (float64)."""
    mean = train.mean(axis=0)
    covariance = np.cov(train, rowvar=False, bias=True)
    centred = test - mean
    solved = np.linalg.solve(covariance, centred.T).T
    _, log_det = np.linalg.slogdet(covariance)
    constant = log_det + train.shape[1] * math.log(2 * math.pi)
    return float(np.mean(0.5 * ((centred * solved).sum(1) + constant)))


def zuko_nll(
    train: np.ndarray, validation: np.ndarray, test: np.ndarray, batch_size: int, seed: int
) -> dict[str, Any]:
    """zuko's NSF under the same protocol; the test NLL at the best validation epoch."""
    import torch
    import zuko

    torch.manual_seed(seed)
    mean, std = train.mean(axis=0), train.std(axis=0)
    log_std = float(np.log(std).sum())

    def tensor(rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((rows - mean) / std, dtype=torch.float32)

    x_train, x_validation, x_test = tensor(train), tensor(validation), tensor(test)
    flow = zuko.flows.NSF(train.shape[1], transforms=5, hidden_features=(128, 128))
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR)

    def nll(rows: torch.Tensor) -> float:
        with torch.no_grad():
            return float(-flow().log_prob(rows).double().mean()) + log_std

    best = {"validation": nll(x_validation), "epoch": 0, "state": copy.deepcopy(flow.state_dict())}
    generator = torch.Generator().manual_seed(seed)
    steps = epoch = 0
    while epoch < MAX_EPOCHS and steps < MAX_STEPS:
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            loss = -flow().log_prob(x_train[order[start : start + batch_size]]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        epoch += 1
        value = nll(x_validation)
        if value < best["validation"]:
            best = {"validation": value, "epoch": epoch, "state": copy.deepcopy(flow.state_dict())}
        elif epoch - best["epoch"] >= PATIENCE:
            break
    flow.load_state_dict(best["state"])
    return {
        "test": nll(x_test),
        "validation": best["validation"],
        "best_epoch": best["epoch"],
        "epochs": epoch,
        "steps": steps,
    }


def measure(name: str, folder: Path, seed: int, rerun: bool, peer: bool) -> dict[str, Any]:
    data = write_table(name, folder)
    values = np.loadtxt(data, delimiter=",", skiprows=1, ndmin=2)
    run = run_flowkit(data, folder / f"{name}-run", seed)
    best = run["best"]
    assert best["event"] == "best", best
    split = run["split"]
    train, validation, test = (values[split[key]] for key in ("train", "validation", "test"))
    result: dict[str, Any] = {
        "table": name,
        "rows": values.shape[0],
        "columns": values.shape[1],
        "train/validation/test rows": [len(train), len(validation), len(test)],
        "batch_size": run["batch_size"],
        "flowkit_test_nll": best["best_test_nll"],
        "flowkit_best_step": best["best_step"],
        "flowkit_best_epoch": best["best_epoch"],
        "flowkit_steps": best["step"],
        "flowkit_stopped_early": best["stopped_early"],
        "gaussian_test_nll": gaussian_nll(train, test),
    }
    if rerun:
        again = run_flowkit(data, folder / f"{name}-rerun", seed)
        result["rerun_identical"] = without_times(again["records"]) == without_times(run["records"])
    if peer:
        zuko = zuko_nll(train, validation, test, run["batch_size"], seed)
        result.update(
            zuko_test_nll=zuko["test"],
            zuko_best_epoch=zuko["best_epoch"],
            zuko_epochs=zuko["epochs"],
            zuko_steps=zuko["steps"],
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-zuko", action="store_true", help="skip the zuko comparison")
    parser.add_argument("--no-rerun", action="store_true", help="skip the same-seed rerun")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="flowkit-tabular-") as directory:
        for name in args.tables.split(","):
            result = measure(name, Path(directory), args.seed, not args.no_rerun, not args.no_zuko)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print("| table | rows x columns | flowkit nsf | Gaussian | zuko NSF | stopped early | rerun |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        zuko = f"{r['zuko_test_nll']:.2f}" if "zuko_test_nll" in r else "-"
        print(
            f"| {r['table']} | {r['rows']} x {r['columns']} | {r['flowkit_test_nll']:.2f} | "
            f"{r['gaussian_test_nll']:.2f} | {zuko} | {r['flowkit_stopped_early']} "
            f"(step {r['flowkit_steps']}) | {r.get('rerun_identical', '-')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
