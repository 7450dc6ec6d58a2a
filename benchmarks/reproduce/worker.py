"""Entry point of a worker process: ``python -m benchmarks.reproduce.worker '<json spec>'``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import ROOT

__all__ = ["main", "run_spec", "run_workers"]


def run_spec(spec: dict) -> None:
    """Run one spec of an experiment's plan (the experiment writes its own records)."""
    if spec["experiment"] == "ablation":
        from benchmarks.reproduce.ablation import run_one

        run_one(spec)
    elif spec["experiment"] == "time-to-quality":
        from benchmarks.reproduce.time_to_quality import run_library

        run_library(spec)
    elif spec["experiment"] == "frontier":
        from benchmarks.reproduce.frontier import run_model

        run_model(spec)
    elif spec["experiment"] == "dequantization":
        from benchmarks.reproduce.dequantization import run_one as run_dequantization

        run_dequantization(spec)
    else:
        raise ValueError(f"unknown experiment {spec['experiment']!r}")


def run_workers(
    specs: list[dict[str, Any]],
    *,
    jobs: int,
    in_process: bool,
    python: str,
    env: dict[str, str],
    label: Callable[[dict[str, Any]], str],
) -> list[int]:
    """Run ``python -m benchmarks.reproduce.worker '<spec>'`` per spec, ``jobs`` at a time.

    A worker writes its own records; this returns the exit statuses in plan order, printing a line
    per finished worker (and the tail of its error output when it failed). With ``in_process`` the
    specs run one after another in this process, which saves each one's start-up.
    """
    began = time.perf_counter()
    if in_process:
        statuses = []
        for index, spec in enumerate(specs, 1):
            started = time.perf_counter()
            try:
                run_spec(spec)
                statuses.append(0)
                outcome = "ok"
            except Exception as error:  # reported; the other runs go on
                statuses.append(1)
                outcome = f"FAILED ({type(error).__name__}: {error})"
            print(
                f"[{index}/{len(specs)}] {label(spec)}: {outcome} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        print(f"{len(specs)} runs in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        return statuses

    def one(index_spec: tuple[int, dict[str, Any]]) -> int:
        index, spec = index_spec
        started = time.perf_counter()
        done = subprocess.run(
            [python, "-m", "benchmarks.reproduce.worker", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        outcome = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        print(
            f"[{index}/{len(specs)}] {label(spec)}: {outcome} "
            f"({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        if done.returncode:
            print("\n".join(done.stderr.strip().splitlines()[-5:]), file=sys.stderr)
        return done.returncode

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        statuses = list(pool.map(one, enumerate(specs, 1)))
    print(f"{len(specs)} runs in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return statuses


def main(argv: list[str] | None = None) -> int:
    """Run the spec's experiment step (it writes its own records); 0 on success."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.reproduce.worker '<json spec>'", file=sys.stderr)
        return 2
    run_spec(json.loads(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
