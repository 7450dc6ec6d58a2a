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
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    # Run as a script: make the repository root (holding benchmarks/ and flowkit/) importable.
    sys.path.insert(0, ROOT)

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

BENCHMARKS_HEADER = """# Benchmarks

Results of the benchmarks in `benchmarks/` (`python -m benchmarks.run` for Glow,
`python -m benchmarks.density` for MAF and NSF), newest last. Each section was measured in one run
on the machine it names; compare numbers only within a section.
"""


def library_available(name: str) -> bool:
    """Whether ``name`` can be imported by the measurement processes."""
    return importlib.util.find_spec(name) is not None


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
    command = [python, "-m", "benchmarks.measure", json.dumps(spec)]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=allocator_env(spec["allocator"]),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "spec": spec, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = done.stderr.strip().splitlines()[-3:]
    return {
        "ok": False,
        "spec": spec,
        "error": f"exit status {done.returncode} without a result: {' / '.join(tail)}",
    }


def _names(text: str | None, default: list[str]) -> list[str]:
    return default if text is None else [name.strip() for name in text.split(",") if name.strip()]


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
    parser.add_argument(
        "--output",
        help="Markdown file the report is appended to (default BENCHMARKS.md; quick runs append "
        "only when this is given)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    parser.add_argument("--json", help="also write every record of the run to this JSON file")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the measurements")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when every measurement succeeded, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    configs = _names(args.configs, ["small"] if args.quick else ["paper", "small"])
    if args.quick and configs != ["small"]:
        print("--quick runs the small config only", file=sys.stderr)
        return 2
    variants = _names(args.variants, list(VARIANTS))
    allocators = _names(args.allocators, list(ALLOCATORS))
    sections = _names(args.only, list(SECTIONS))
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

    records = []
    began = time.perf_counter()
    for index, spec in enumerate(plan, 1):
        started = time.perf_counter()
        record = run_spec(spec, python=args.python, timeout=args.timeout)
        records.append(record)
        outcome = _headline(record) if record["ok"] else "FAILED: " + record["error"]
        elapsed = time.perf_counter() - started
        print(
            f"[{index}/{len(plan)}] {_label(spec)}: {outcome} ({elapsed:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(f"{len(plan)} measurements in {time.perf_counter() - began:.0f} s", file=sys.stderr)

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
    print(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)
    output = args.output
    if output is None and not args.quick:
        output = os.path.join(ROOT, "BENCHMARKS.md")
    if output and not args.no_write:
        fresh = not os.path.exists(output)
        with open(output, "a") as handle:
            if fresh:
                handle.write(BENCHMARKS_HEADER + "\n")
            handle.write(report + "\n")
        print(f"appended to {output}", file=sys.stderr)
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
