"""Benchmark flowkit's Glow against normflows' Glow: speed, memory and FLOPs, in fresh processes.

Usage::

    python -m benchmarks.run              # full run: paper and small configs, both allocators
    python -m benchmarks.run --quick      # smoke test: small config, tiny sizes
    python -m benchmarks.run --configs small --only train,static --variants flowkit,normflows

Each measurement runs in a fresh ``python -m benchmarks.measure`` process under the environment of
its allocator setting, and prints one JSON line; this process collects them, prints the tables
(with flowkit/normflows ratios from this run) and appends them to ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root (holding benchmarks/ and flowkit/) importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_output_arguments,
    library_available,
    names,
    publish,
    run_measurement,
    run_plan,
)
from benchmarks.plan import (  # noqa: E402
    ALLOCATORS,
    CONFIGS,
    FULL,
    PEER,
    QUICK,
    SECTIONS,
    VARIANTS,
    allocator_env,
    build_plan,
)
from benchmarks.report import render  # noqa: E402

__all__ = ["library_available", "main", "run_spec"]


def _label(spec: dict[str, Any]) -> str:
    parts = [spec["measure"], spec.get("variant", ""), spec.get("config_name", "")]
    if "config" in spec and spec.get("sweep"):
        parts.append(f"K={spec['config']['K']}")
    if "batch" in spec and spec["measure"] != "static":
        parts.append(f"b{spec['batch']}")
    parts.append(spec["allocator"])
    return " ".join(p for p in parts if p)


def _headline(record: dict[str, Any]) -> str:
    result = record.get("result", {})
    measure = record["spec"]["measure"]
    if measure in ("train", "eval"):
        text = f"{result['images_per_second']:.3g} img/s"
        if "memory" in result:
            text += f", peak {result['memory']['peak_mib']:.0f} MiB"
        return text
    if measure == "sample":
        return f"{result['median_seconds']:.3g} s"
    if measure == "static":
        train_gflops = result["train_flops_per_image"] / 1e9
        return f"{result['parameters']:,} parameters, {train_gflops:.3g} GFLOP/image in training"
    if measure == "machine":
        conv, mm = result["conv1x1"]["gflops_best"], result["mm"]["gflops_best"]
        return f"conv {conv:.3g} GFLOP/s, mm {mm:.3g} GFLOP/s"
    return ""


def run_spec(spec: dict[str, Any], *, python: str, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process under its allocator's environment."""
    return run_measurement(
        "benchmarks.measure",
        spec,
        env=allocator_env(spec["allocator"]),
        python=python,
        timeout=timeout,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: small config, tiny sizes")
    parser.add_argument("--configs", help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--only", help=f"comma-separated sections, from {list(SECTIONS)}")
    parser.add_argument("--variants", help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--allocators", help=f"comma-separated, from {list(ALLOCATORS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when every measurement succeeded, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    configs = names(args.configs, ["small"] if args.quick else ["paper", "small"])
    if args.quick and configs != ["small"]:
        print("--quick runs the small config only", file=sys.stderr)
        return 2
    variants = names(args.variants, list(VARIANTS))
    allocators = names(args.allocators, list(ALLOCATORS))
    sections = names(args.only, list(SECTIONS))
    notes = []
    if PEER in variants and not library_available(PEER):
        variants.remove(PEER)
        message = (
            f"{PEER} is not installed, so the peer is skipped and no ratios are computed "
            f"(install it with `pip install {PEER}==1.7.3` or `pip install -e .[bench]`)."
        )
        notes.append(message)
        print(message, flush=True)
    if args.quick:
        notes.append("quick mode: tiny sizes for a smoke test; the numbers mean nothing.")
    try:
        plan = build_plan(
            configs=configs,
            variants=variants,
            allocators=allocators,
            sections=sections,
            sizes=sizes,
            device=args.device,
        )
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    records = run_plan(
        plan,
        lambda spec: run_spec(spec, python=args.python, timeout=args.timeout),
        _label,
        _headline,
    )

    invoked = "python -m benchmarks.run" if __package__ else "python benchmarks/run.py"
    command = " ".join([invoked] + [shlex.quote(a) for a in argv])
    report = render(
        records,
        variants=variants,
        allocators=allocators,
        configs=configs,
        command=command,
        root=ROOT,
        notes=notes,
    )
    return publish(report, records, args)


if __name__ == "__main__":
    sys.exit(main())
