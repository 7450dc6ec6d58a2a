"""Entry point of a worker process: ``python -m benchmarks.reproduce.worker '<json spec>'``."""

from __future__ import annotations

import json
import sys

__all__ = ["main", "run_spec"]


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
