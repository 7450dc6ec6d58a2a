"""bfloat16 coupling networks against float32: test bits/dim after the same training steps.

    python -m benchmarks.precision [--epochs 8] [--seeds 0,1] [--no-write]

Trains the ``glow-small`` preset on the bundled data twice per seed, identical but for
``conditioner_dtype``, each in a fresh process, and appends the test bits/dim of both and their
difference to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.report import git_commit

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
from flowkit.cli import main
import flowkit.train.trainer as trainer_module
results = {}
original = trainer_module.Trainer.fit
def fit(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    results.update(steps=result.steps, test_bpd=result.final_test_bpd, start=result.test_bpd[0][1])
    return result
trainer_module.Trainer.fit = fit
main(sys.argv[1:])
print("RESULT " + json.dumps(results))
"""


def run_one(dtype: str | None, seed: int, epochs: int, output: str) -> dict:
    """Train glow-small in a fresh process and return its final test bits/dim."""
    value = "null" if dtype is None else json.dumps(dtype)
    command = [
        sys.executable,
        "-c",
        _CHILD,
        "train",
        "--preset",
        "glow-small",
        "--output",
        output,
        "--no-progress",
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--set",
        f"model.conditioner_dtype={value}",
        "--set",
        f"model.seed={seed}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    line = next(row for row in completed.stdout.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=8, help="epochs of glow-small (its preset: 8)"
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (model and data)")
    parser.add_argument(
        "--output", default=str(ROOT / "BENCHMARKS.md"), help="Markdown file to append to"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as directory:
            float32 = run_one(None, seed, args.epochs, f"{directory}/float32")
            bfloat16 = run_one("bfloat16", seed, args.epochs, f"{directory}/bfloat16")
        rows.append((seed, float32, bfloat16))
        print(
            f"seed {seed}: float32 {float32['test_bpd']:.4f}, bfloat16 {bfloat16['test_bpd']:.4f}"
        )
    commit = git_commit(str(ROOT))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {stamp}, commit {commit}: bfloat16 coupling networks against float32",
        "",
        f"Command: `python -m benchmarks.precision --epochs {args.epochs} --seeds {args.seeds}`",
        "",
        "Preset `glow-small` on the bundled Fashion-MNIST subset; both runs of a seed share the "
        "initial weights, data order and noise; test bits/dim with the averaged weights.",
        "",
        "| seed | steps | float32 test bpd | bfloat16 test bpd | bfloat16 - float32 |",
        "|---|---|---|---|---|",
    ]
    for seed, float32, bfloat16 in rows:
        lines.append(
            f"| {seed} | {float32['steps']} | {float32['test_bpd']:.4f} "
            f"| {bfloat16['test_bpd']:.4f} "
            f"| {bfloat16['test_bpd'] - float32['test_bpd']:+.4f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(args.output, "a") as stream:
            stream.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
