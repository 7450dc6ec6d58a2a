"""bfloat16 against float32 training, model by model: throughput and the test metric.

    python -m benchmarks.precision [--models glow-small,flowpp-small,tarflow-small,nsf]
                                   [--seeds 0] [--steps glow-small=300,...] [--no-write]

Each run is ``flowkit train --preset P --precision X --max-steps N`` in a fresh process; the two
runs of a seed share the initial weights, the data order and the noise, so the difference of
their test metrics is the effect of the precision alone. The image presets train on the bundled
Fashion-MNIST subset; ``nsf`` trains on scikit-learn's digits table (1,797 rows x 64 columns,
dequantised with uniform noise so that it has a density). Throughput is training examples per
second over the run's training time (evaluation aside). Results are appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import git_commit

ROOT = Path(__file__).resolve().parents[1]

# Steps per run: a few CPU minutes each in float32 on the development machine.
DEFAULT_STEPS = {"glow-small": 300, "flowpp-small": 100, "tarflow-small": 600, "nsf": 600}

_CHILD = """
import json, sys
from flowkit.cli import main
import flowkit.train.trainer as trainer_module
results = {}
original = trainer_module.Trainer.fit
def fit(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    results.update(
        steps=result.steps,
        unit=result.unit,
        test=result.final_test_bpd if result.unit == "bits/dim" else result.final_test_nll,
        elapsed=self.state.elapsed,
        batch_size=self.config.batch_size,
    )
    return result
trainer_module.Trainer.fit = fit
code = main(sys.argv[1:])
print("RESULT " + json.dumps(results))
sys.exit(code)
"""


def write_digits(folder: Path, seed: int) -> Path:
    """scikit-learn's digits as a CSV table, each value dequantised with U(0, 1) noise."""
    import sklearn.datasets

    values = sklearn.datasets.load_digits().data.astype(np.float64)
    values = values + np.random.default_rng(seed).random(values.shape)
    path = folder / "digits.csv"
    header = ",".join(f"pixel{i}" for i in range(values.shape[1]))
    np.savetxt(path, values, delimiter=",", header=header, comments="", fmt="%.6f")
    return path


def run_one(preset: str, precision: str, seed: int, steps: int, folder: Path) -> dict:
    """Train ``preset`` for ``steps`` steps in a fresh process; its test metric and time."""
    command = [sys.executable, "-c", _CHILD, "train", "--preset", preset]
    command += ["--output", str(folder / f"{preset}-{precision}-{seed}"), "--no-progress"]
    command += ["--max-steps", str(steps), "--seed", str(seed), "--precision", precision]
    # One evaluation at the end: none on the clock in between.
    command += ["--set", "train.eval_every=100000", "--set", "train.sample_every=100000"]
    if preset == "nsf":
        command += ["--data", str(write_digits(folder, seed)), "--test-fraction", "0.1"]
        command += ["--set", "train.patience=null"]
    else:
        command += ["--epochs", "1000"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed:\n{completed.stderr[-2000:]}")
    line = next(row for row in completed.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["throughput"] = result["steps"] * result["batch_size"] / result["elapsed"]
    return result


def _steps(text: str | None) -> dict[str, int]:
    steps = dict(DEFAULT_STEPS)
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        steps[name] = int(value)
    return steps


def _report(rows: list[tuple], command: str) -> str:
    commit = git_commit(str(ROOT))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## bfloat16 against float32 training, {stamp}, commit {commit}",
        "",
        f"`{command}`: each run in a fresh process, one after the other, on "
        f"{platform.processor() or platform.machine()} with {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. The two runs of a seed share initial weights, data order and "
        "noise; throughput is training examples per second over the training time (evaluation "
        "aside); the test metric is taken after the same number of steps, with the averaged "
        "weights, evaluated in float32.",
        "",
        "| model | seed | steps | float32 ex/s | bfloat16 ex/s | speed-up | float32 test "
        "| bfloat16 test | difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, seed, full, half in rows:
        lines.append(
            f"| {preset} | {seed} | {full['steps']} | {full['throughput']:.1f} "
            f"| {half['throughput']:.1f} | {half['throughput'] / full['throughput']:.2f}x "
            f"| {full['test']:.4f} | {half['test']:.4f} | {half['test'] - full['test']:+.4f} "
            f"{full['unit']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(DEFAULT_STEPS), help="run presets")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--steps", help="steps per preset, e.g. glow-small=300,nsf=600")
    parser.add_argument(
        "--output", default=str(ROOT / "BENCHMARKS.md"), help="Markdown file to append to"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    steps = _steps(args.steps)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for preset in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                pair = [
                    run_one(preset, precision, seed, steps[preset], Path(directory))
                    for precision in ("float32", "bfloat16")
                ]
                rows.append((preset, seed, *pair))
                print(
                    f"{preset} seed {seed}: "
                    + ", ".join(f"{r['throughput']:.1f} ex/s, test {r['test']:.4f}" for r in pair),
                    flush=True,
                )
    command = "python -m benchmarks.precision " + " ".join(argv or sys.argv[1:])
    text = _report(rows, command.strip())
    print(text)
    if not args.no_write:
        with open(args.output, "a") as stream:
            stream.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
