"""Benchmark flowkit's MAF and NSF against zuko's and nflows': test log-likelihood and step time.

Usage::

    python -m benchmarks.density               # full run; appends the report to BENCHMARKS.md
    python -m benchmarks.density --quick       # smoke test: tiny sizes, nothing appended
    python -m benchmarks.density --datasets mixture-10d --models maf --libraries flowkit,zuko

Every (dataset, model, library) is trained in a fresh ``python -m benchmarks.density_measure``
process on the same data (the library's toy generators, fixed seeds, standardised by the training
set), from the same seed, with Adam at the same learning rate, batch size and number of steps; the
peers' hidden widths are chosen so that their parameter counts match flowkit's presets. This
process collects one JSON record per measurement and prints (and appends) the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root (holding benchmarks/ and flowkit/) importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_output_arguments,
    check_names,
    library_available,
    names,
    publish,
    run_measurement,
    run_plan,
)
from benchmarks.density_measure import DATASETS  # noqa: E402
from benchmarks.density_models import LIBRARIES, MODELS, default_architecture  # noqa: E402
from benchmarks.density_report import render_density  # noqa: E402
from benchmarks.plan import allocator_env  # noqa: E402

__all__ = ["FULL", "QUICK", "DensitySizes", "build_density_plan", "main", "run_density_spec"]

# The peers' versions this benchmark was written against (the `bench` extra pins them).
PEER_VERSIONS = {"zuko": "1.6.0", "nflows": "0.14"}


@dataclass(frozen=True)
class DensitySizes:
    """Data sizes and the training schedule shared by every measurement."""

    train_size: int = 50_000
    test_size: int = 20_000
    batch: int = 256
    steps: int = 5_000
    # The first steps allocate Adam's moments and warm allocator and oneDNN caches.
    warmup: int = 50
    learning_rate: float = 1e-3
    curve_points: int = 50


FULL = DensitySizes()
QUICK = DensitySizes(train_size=512, test_size=256, batch=64, steps=10, warmup=2, curve_points=5)
QUICK_DATASETS = ["two-moons", "mixture-10d"]
QUICK_MODELS = ["maf", "nsf"]


def build_density_plan(
    *,
    datasets: list[str],
    models: list[str],
    libraries: list[str],
    sizes: DensitySizes,
    seeds: list[int],
    data_seed: int,
    threads: int,
    device: str,
) -> list[dict[str, Any]]:
    """Every measurement spec, libraries side by side for each (dataset, model, seed).

    The data depend on ``data_seed`` only, so every seed trains on the same data and is tested on
    the same test set; a seed sets the initial weights and the order of the minibatches.
    """
    check_names("datasets", datasets, DATASETS)
    check_names("models", models, MODELS)
    check_names("libraries", libraries, LIBRARIES)
    shared = dataclasses.asdict(sizes)
    specs = []
    for dataset in datasets:
        for model in models:
            arch = default_architecture(model, DATASETS[dataset])
            for seed in seeds:
                for library in libraries:
                    specs.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "library": library,
                            "architecture": arch.to_dict(),
                            **shared,
                            "data_seed": data_seed,
                            "seed": seed,
                            "threads": threads,
                            "device": device,
                        }
                    )
    return specs


def run_density_spec(spec: dict[str, Any], *, python: str, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process; return its record (``ok`` False on failure)."""
    env = allocator_env("default")
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    return run_measurement(
        "benchmarks.density_measure", spec, env=env, python=python, timeout=timeout
    )


def _label(spec: dict[str, Any]) -> str:
    return f"{spec['dataset']} {spec['model']} {spec['library']} seed {spec['seed']}"


def _headline(record: dict[str, Any]) -> str:
    result = record["result"]
    seconds = result["median_step_seconds"]
    step = "-" if seconds is None else f"{1000 * seconds:.3g} ms/step"
    return (
        f"test log-lik. {result['test_log_likelihood']:.4g}, {step}, "
        f"{result['parameters']:,} parameters (width {result['width']})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.density", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    parser.add_argument("--datasets", help=f"comma-separated, from {list(DATASETS)}")
    parser.add_argument("--models", help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--libraries", help=f"comma-separated, from {list(LIBRARIES)}")
    parser.add_argument("--steps", type=int, help=f"training steps (default {FULL.steps})")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds of the initial weights and batches"
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the train and test sets")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads of every measurement"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when every measurement succeeded, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.steps is not None:
        if args.steps <= sizes.warmup:
            print(f"--steps must exceed the {sizes.warmup} warm-up steps", file=sys.stderr)
            return 2
        sizes = dataclasses.replace(sizes, steps=args.steps)
    datasets = names(args.datasets, QUICK_DATASETS if args.quick else list(DATASETS))
    models = names(args.models, QUICK_MODELS if args.quick else list(MODELS))
    libraries = names(args.libraries, list(LIBRARIES))
    try:
        seeds = [int(seed) for seed in names(args.seeds, ["0"])]
    except ValueError:
        print(f"--seeds expects comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    notes = []
    for peer in [name for name in libraries if name != "flowkit"]:
        if peer in PEER_VERSIONS and not library_available(peer):
            libraries.remove(peer)
            message = (
                f"{peer} is not installed, so the peer is skipped and no comparison with it is "
                f"made (install it with `pip install {peer}=={PEER_VERSIONS[peer]}` or "
                "`pip install -e .[bench]`)."
            )
            notes.append(message)
            print(message, flush=True)
    if args.quick:
        notes.append("quick mode: tiny sizes for a smoke test; the numbers mean nothing.")
    try:
        plan = build_density_plan(
            datasets=datasets,
            models=models,
            libraries=libraries,
            sizes=sizes,
            seeds=seeds,
            data_seed=args.data_seed,
            threads=args.threads,
            device=args.device,
        )
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    records = run_plan(
        plan,
        lambda spec: run_density_spec(spec, python=args.python, timeout=args.timeout),
        _label,
        _headline,
    )

    invoked = "python -m benchmarks.density" if __package__ else "python benchmarks/density.py"
    settings = {
        "steps": sizes.steps,
        "batch": sizes.batch,
        "Adam learning rate": f"{sizes.learning_rate} (cosine decay to 0)",
        "training points": sizes.train_size,
        "test points": sizes.test_size,
        "timed steps after warm-up": sizes.steps - sizes.warmup,
        "seeds": ",".join(str(seed) for seed in seeds),
        "data seed": args.data_seed,
        "threads": args.threads,
    }
    report = render_density(
        records,
        datasets=datasets,
        models=models,
        libraries=libraries,
        settings=settings,
        command=" ".join([invoked] + [shlex.quote(a) for a in argv]),
        root=ROOT,
        notes=notes,
    )
    return publish(report, records, args)


if __name__ == "__main__":
    sys.exit(main())
