"""What the benchmark drivers share: one measurement per fresh process, and the report's output.

A driver (:mod:`benchmarks.run`, :mod:`benchmarks.density`) builds a plan of JSON specs and hands
each to :func:`run_measurement`, which starts ``python -m <module> '<spec>'``; the measurement
module's ``main`` is :func:`measurement_main` around its own ``measure(spec)``, and prints one JSON
record. The driver renders the records and :func:`publish` prints, saves and appends the report.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "BENCHMARKS_HEADER",
    "ROOT",
    "add_output_arguments",
    "batch_jacobian",
    "check_names",
    "library_available",
    "measurement_main",
    "names",
    "publish",
    "resolve_device",
    "run_measurement",
    "run_plan",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS_HEADER = """# Benchmarks

Results of the benchmarks in `benchmarks/` (`python -m benchmarks.run` for Glow,
`python -m benchmarks.density` for MAF and NSF), newest last. Each section was measured in one run
on the machine it names; compare numbers only within a section.
"""


def batch_jacobian(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Each row's Jacobian of ``outputs`` ``(N, D_out)`` by ``inputs`` ``(N, D_in)``, stacked.

    Rows must not depend on each other's inputs (a batch of independent examples); one backward
    pass per output coordinate, so for the small dimensions of the exact references here.
    """
    import torch

    rows = [
        torch.autograd.grad(outputs[:, i].sum(), inputs, retain_graph=True)[0]
        for i in range(outputs.shape[1])
    ]
    return torch.stack(rows, dim=1)


def library_available(name: str) -> bool:
    """Whether ``name`` can be imported by the measurement processes."""
    return importlib.util.find_spec(name) is not None


def names(text: str | None, default: list[str]) -> list[str]:
    """The comma-separated names of a command-line option, or ``default`` when it was not given."""
    return default if text is None else [name.strip() for name in text.split(",") if name.strip()]


def check_names(what: str, given: list[str], known: Iterable[str]) -> None:
    """Raise a ValueError naming the ``given`` names that are not ``known``, and the known ones."""
    known = list(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; expected some of {sorted(known)}")


def run_measurement(
    module: str, spec: dict[str, Any], *, env: dict[str, str], python: str, timeout: float
) -> dict[str, Any]:
    """Run ``python -m module '<spec>'`` in a fresh process; return its record.

    The record is the last JSON line the process printed; a crash, a missing record or a timeout
    gives ``{"ok": False, "spec": spec, "error": ...}`` so that the run goes on.
    """
    command = [python, "-m", module, json.dumps(spec)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
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


def run_plan(
    plan: list[dict[str, Any]],
    run: Callable[[dict[str, Any]], dict[str, Any]],
    label: Callable[[dict[str, Any]], str],
    headline: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Run every spec of ``plan`` in turn, printing a progress line each; return the records."""
    records = []
    began = time.perf_counter()
    for index, spec in enumerate(plan, 1):
        started = time.perf_counter()
        record = run(spec)
        records.append(record)
        outcome = headline(record) if record["ok"] else "FAILED: " + record["error"]
        elapsed = time.perf_counter() - started
        print(
            f"[{index}/{len(plan)}] {label(spec)}: {outcome} ({elapsed:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(f"{len(plan)} measurements in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return records


def measurement_main(
    argv: list[str] | None, measure: Callable[[dict[str, Any]], dict[str, Any]], module: str
) -> int:
    """Entry point of a measurement process: the spec is the first argument (JSON, or ``-``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} '<json spec>' | -", file=sys.stderr)
        return 2
    text = sys.stdin.read() if argv[0] == "-" else argv[0]
    spec = json.loads(text)
    try:
        record = measure(spec)
    except Exception as error:  # reported to the parent, which goes on with other measurements
        traceback.print_exc()
        record = {"ok": False, "spec": spec, "error": f"{type(error).__name__}: {error}"}
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


def resolve_device(name: str) -> torch.device:
    """The device a spec names: ``auto`` is CUDA when it is available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every driver has: where the report goes, and how measurements are run."""
    parser.add_argument(
        "--output",
        help="Markdown file the report is appended to (default BENCHMARKS.md; quick runs append "
        "only when this is given)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    parser.add_argument("--json", help="also write every record of the run to this JSON file")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the measurements")


def publish(report: str, records: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Print the report, save the records (``--json``) and append the report (``--output``).

    Quick runs append only to an ``--output`` that was named. Returns the driver's exit status: 0
    when every measurement succeeded, 1 otherwise.
    """
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
