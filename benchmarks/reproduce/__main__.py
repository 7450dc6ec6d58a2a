"""Rerun Glow's experiments at CPU scale.

Usage::

    python -m benchmarks.reproduce all [--quick]          # everything
    python -m benchmarks.reproduce ablation --jobs 2      # Figure 3: permutation x coupling
    python -m benchmarks.reproduce samples                # temperatures, classes, latent space
    python -m benchmarks.reproduce time-to-quality --minutes 20
    python -m benchmarks.reproduce frontier --seeds 0,1,2   # Glow, Flow++, TarFlow, equal time
    python -m benchmarks.reproduce dequantization --jobs 2  # Flow++: variational vs uniform

Records (JSON lines), run directories and Markdown tables go to ``--output`` (default
``runs/reproduce``, ``runs/reproduce-quick`` with ``--quick``); figures go to ``--figures``
(default ``docs/images/reproduce`` for full runs, ``<output>/figures`` for quick ones). Every
experiment resumes: finished runs are skipped, an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.common import ROOT  # noqa: E402
from benchmarks.plan import allocator_env  # noqa: E402
from benchmarks.reproduce import (  # noqa: E402
    ablation,
    dequantization,
    frontier,
    samples,
    time_to_quality,
)
from benchmarks.reproduce.common import (  # noqa: E402
    DATASETS,
    FIGURES,
    dataset_path,
    parse_options,
    prepare_dataset,
    read_records,
    worker_env,
)
from benchmarks.reproduce.worker import run_workers  # noqa: E402

__all__ = ["main"]

EXPERIMENTS = ("ablation", "samples", "time-to-quality", "frontier", "dequantization")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in (*EXPERIMENTS, "all"):
        sub = commands.add_parser(name, help=f"run {'every experiment' if name == 'all' else name}")
        sub.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
        sub.add_argument("--output", help="records, runs and tables (default runs/reproduce)")
        sub.add_argument("--figures", help="figures (default docs/images/reproduce)")
        sub.add_argument(
            "--fashion-mnist",
            help="folder of Fashion-MNIST's idx.gz files ('synthetic' with --quick)",
        )
        sub.add_argument("--cifar10", help="the CIFAR-10 JPEG archive ('synthetic' with --quick)")
        sub.add_argument(
            "--train-option",
            action="append",
            metavar="KEY=VALUE",
            help="a TrainConfig field for every flowkit run (value read as JSON); repeatable",
        )
        sub.add_argument(
            "--model-option",
            action="append",
            metavar="KEY=VALUE",
            help=(
                "a model config field for every flowkit model (frontier: MODEL.FIELD, e.g. "
                "glow.K=4); repeatable"
            ),
        )
        sub.add_argument("--python", default=sys.executable, help="interpreter of the workers")
        if name in ("ablation", "dequantization", "all"):
            sub.add_argument("--jobs", type=int, default=1, help="runs in parallel")
            sub.add_argument(
                "--seeds",
                help="seeds, comma-separated (ablation and frontier 0,1,2; dequantization 0,1)",
            )
            sub.add_argument(
                "--steps",
                type=int,
                help="optimizer steps per run (ablation 500, dequantization 300)",
            )
        if name in ("ablation", "samples", "frontier", "all"):
            sub.add_argument("--datasets", default=",".join(DATASETS), help="fashion-mnist,cifar10")
        if name in ("time-to-quality", "frontier", "all"):
            sub.add_argument(
                "--minutes",
                type=float,
                help="training budget per model (time-to-quality 20, frontier 1.25)",
            )
            sub.add_argument(
                "--threads",
                type=int,
                help="torch threads (time-to-quality: torch's default; frontier: 2)",
            )
            sub.add_argument(
                "--seed", type=int, default=0, help="seed of the timed runs (time-to-quality)"
            )
        if name == "frontier":
            sub.add_argument("--seeds", help="seeds, comma-separated (0,1,2)")
        if name in ("frontier", "all"):
            sub.add_argument(
                "--warmup-steps",
                type=int,
                help="frontier: linear warm-up of every model, in optimizer steps (10; 0: none)",
            )
            sub.add_argument(
                "--sample-images",
                type=int,
                help="frontier: images drawn for the sampling time (16)",
            )
        if name in ("frontier", "dequantization", "all"):
            sub.add_argument(
                "--num-test",
                type=int,
                help="test images scored (frontier 500, dequantization 2000)",
            )
            sub.add_argument(
                "--iw-samples",
                type=int,
                help="draws of the importance-weighted bound (frontier 4, dequantization 16)",
            )
    return parser


def _datasets(args: argparse.Namespace, names: list[str], cache_dir: Path) -> dict[str, Path]:
    given = {"fashion-mnist": args.fashion_mnist, "cifar10": args.cifar10}
    caches = {}
    for name in names:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; expected some of {list(DATASETS)}")
        source = dataset_path(name, given[name], args.quick)
        caches[name], described = prepare_dataset(name, source, cache_dir, quick=args.quick)
        print(f"{name}: {described}", file=sys.stderr)
    return caches


def _options(args: argparse.Namespace) -> tuple[dict, dict]:
    return (
        parse_options(args.train_option, "--train-option"),
        parse_options(args.model_option, "--model-option"),
    )


def run_ablation(args: argparse.Namespace, output: Path, figures: Path) -> int:
    """Train every missing (dataset, variant, seed), then write the table and the figures."""
    import dataclasses

    sizes = ablation.QUICK if args.quick else ablation.FULL
    if args.steps is not None:
        sizes = dataclasses.replace(sizes, steps=args.steps)
    where = output / "ablation"
    caches = _datasets(args, args.datasets.split(","), output / "data")
    train_options, model_options = _options(args)
    seeds = [int(s) for s in (args.seeds or "0,1,2").split(",")]
    if args.quick:
        seeds = seeds[:2]
    plan = ablation.build_plan(
        datasets=caches,
        seeds=seeds,
        sizes=sizes,
        output=where,
        threads=1,
        train_options=train_options,
        model_options=model_options,
    )
    statuses = run_workers(
        plan,
        jobs=args.jobs,
        in_process=args.jobs <= 1,
        python=args.python,
        env=worker_env(1),
        label=lambda s: f"ablation {s['dataset']} {s['variant']} seed {s['seed']}",
    )
    records = [r for r in read_records(where / "records.jsonl") if r["dataset"] in caches]
    summaries = ablation.summarize(records, sizes.steps)
    table = ablation.render_table(summaries, sizes.steps)
    (where / "ablation.md").write_text(table)
    for path in ablation.write_figures(summaries, figures):
        print(f"wrote {path}", file=sys.stderr)
    print(table)
    return int(any(statuses))


def run_samples(args: argparse.Namespace, output: Path, figures: Path) -> int:
    """Train (or resume) the models per dataset, then write grids, the table and the figures."""
    from benchmarks.reproduce.common import append_record

    sizes = samples.QUICK if args.quick else samples.FULL
    where = output / "samples"
    caches = _datasets(args, args.datasets.split(","), output / "data")
    train_options, model_options = _options(args)
    options = {"train": train_options, "model": model_options}
    records = []
    for dataset, cache in caches.items():
        records += samples.run_dataset(dataset, cache, sizes, where, figures, options)
        samples.write_figure(records, dataset, figures / f"temperature-{dataset}.png")
    path = where / "records.jsonl"
    path.unlink(missing_ok=True)
    for record in records:
        append_record(path, record)
    table = samples.render_table(records, sizes.n_bits)
    (where / "samples.md").write_text(table)
    print(table)
    return 0


def run_time_to_quality(args: argparse.Namespace, output: Path, figures: Path) -> int:
    """Train normflows, then flowkit, for the budget each; then the table, figure and ratio."""
    import dataclasses

    sizes = time_to_quality.QUICK if args.quick else time_to_quality.FULL
    if args.minutes is not None:
        sizes = dataclasses.replace(sizes, minutes=args.minutes)
    where = output / "time-to-quality"
    caches = _datasets(args, ["fashion-mnist"], output / "data")
    train_options, model_options = _options(args)
    plan = time_to_quality.build_plan(
        cache=caches["fashion-mnist"],
        sizes=sizes,
        output=where,
        threads=args.threads,
        seed=args.seed,
        train_options=train_options,
        model_options=model_options,
    )
    env = worker_env(args.threads)
    env.update(allocator_env("tuned", env))
    statuses = run_workers(
        plan,
        jobs=1,
        # Full runs: each library in a fresh process under the tuned allocator.
        in_process=args.quick,
        python=args.python,
        env=env,
        label=lambda s: f"time-to-quality {s['library']}",
    )
    summary = time_to_quality.summarize(read_records(where / "records.jsonl"))
    table = time_to_quality.render_table(summary)
    (where / "time-to-quality.md").write_text(table)
    (where / "summary.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=1) + "\n"
    )
    time_to_quality.write_figure(summary, figures / "time-to-quality.png")
    print(table)
    return int(any(statuses))


def _evaluation(args: argparse.Namespace, sizes: Any) -> Any:
    import dataclasses

    changes = {"num_test": args.num_test, "iw_samples": args.iw_samples}
    return dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})


def run_frontier(args: argparse.Namespace, output: Path, figures: Path) -> int:
    """Train Glow, Flow++ and TarFlow per dataset and seed, one at a time; then table, figures."""
    import dataclasses

    sizes = _evaluation(args, frontier.QUICK if args.quick else frontier.FULL)
    changes = {
        "minutes": args.minutes,
        "warmup_steps": args.warmup_steps,
        "sample_images": args.sample_images,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})
    threads = args.threads or 2
    seeds = [int(s) for s in (args.seeds or "0,1,2").split(",")]
    if args.quick:
        seeds = seeds[:2]
    where = output / "frontier"
    caches = _datasets(args, args.datasets.split(","), output / "data")
    train_options, model_options = _options(args)
    plan = frontier.build_plan(
        datasets=caches,
        sizes=sizes,
        output=where,
        figures=figures,
        threads=threads,
        seeds=seeds,
        train_options=train_options,
        model_options=model_options,
    )
    frontier.check_settings(plan)
    statuses = run_workers(
        plan,
        jobs=1,
        # Full runs: each model in a fresh process, one at a time (a timing comparison).
        in_process=args.quick,
        python=args.python,
        env=worker_env(threads),
        label=lambda s: f"frontier {s['dataset']} seed {s['seed']} {s['model']}",
    )
    records = [
        r
        for r in read_records(where / "records.jsonl")
        if r["dataset"] in caches and r.get("seed") in seeds
    ]
    summary = frontier.summarize(records)
    table = frontier.render_table(summary)
    (where / "frontier.md").write_text(table)
    for dataset in summary:
        path = frontier.write_figure(summary, dataset, figures / f"frontier-{dataset}.png")
        print(f"wrote {path}", file=sys.stderr)
    print(table)
    return int(any(statuses))


def run_dequantization(args: argparse.Namespace, output: Path, figures: Path) -> int:
    """Train flowpp-small with variational and with uniform dequantization; then the table."""
    import dataclasses

    sizes = _evaluation(args, dequantization.QUICK if args.quick else dequantization.FULL)
    if args.steps is not None:
        sizes = dataclasses.replace(sizes, steps=args.steps)
    where = output / "dequantization"
    caches = _datasets(args, ["fashion-mnist"], output / "data")
    train_options, model_options = _options(args)
    plan = dequantization.build_plan(
        cache=caches["fashion-mnist"],
        seeds=[int(s) for s in (args.seeds or "0,1").split(",")],
        sizes=sizes,
        output=where,
        train_options=train_options,
        model_options=model_options,
    )
    statuses = run_workers(
        plan,
        jobs=args.jobs,
        in_process=args.jobs <= 1,
        python=args.python,
        env=worker_env(1),
        label=lambda s: f"dequantization {s['variant']} seed {s['seed']}",
    )
    summary = dequantization.summarize(read_records(where / "records.jsonl"), sizes.steps)
    table = dequantization.render_table(summary, sizes.steps)
    (where / "dequantization.md").write_text(table)
    print(table)
    return int(any(statuses))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen experiment (or all of them); 0 when every run succeeded."""
    args = _parser().parse_args(argv)
    default = "runs/reproduce-quick" if args.quick else "runs/reproduce"
    output = Path(args.output or os.path.join(ROOT, default)).resolve()
    if args.figures:
        figures = Path(args.figures).resolve()
    else:
        figures = output / "figures" if args.quick else FIGURES
    runners = {
        "ablation": run_ablation,
        "samples": run_samples,
        "time-to-quality": run_time_to_quality,
        "frontier": run_frontier,
        "dequantization": run_dequantization,
    }
    chosen = EXPERIMENTS if args.command == "all" else (args.command,)
    status = 0
    for name in chosen:
        print(f"== {name}", file=sys.stderr)
        status |= runners[name](args, output, figures)
    return status


if __name__ == "__main__":
    sys.exit(main())
