"""Glow's Figure 3: permutation (reverse, shuffle, 1x1 convolution) x coupling (additive, affine).

Six variants of one architecture, each trained for the same number of steps from several seeds on
Fashion-MNIST and CIFAR-10; the test bits/dim along the way gives learning curves (mean and the
min-max band over seeds per variant) and the final values a table (mean +- standard error).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import (
    SHAPES,
    append_record,
    evaluate_bpd,
    load_prepared,
    read_records,
    train_config,
    train_in_chunks,
)
from benchmarks.reproduce.plot import Panel, Series, plot_panels

__all__ = [
    "FULL",
    "PERMUTATIONS",
    "QUICK",
    "VARIANTS",
    "AblationSizes",
    "build_plan",
    "render_table",
    "run_one",
    "summarize",
    "write_figures",
]

PERMUTATIONS = ("reverse", "shuffle", "conv1x1_lu")
COUPLINGS = ("additive", "affine")
VARIANTS = tuple(f"{p}/{c}" for c in COUPLINGS for p in PERMUTATIONS)


@dataclass(frozen=True)
class AblationSizes:
    """The architecture and schedule shared by every variant.

    ``steps`` optimizer steps of ``batch_size`` images; the test bits/dim is measured on the first
    ``num_test`` test images after every ``steps / eval_points`` steps.
    """

    K: int = 6
    L: int = 2
    hidden_channels: int = 32
    batch_size: int = 64
    steps: int = 500
    eval_points: int = 10
    num_test: int = 2000
    num_train: int | None = None
    lr: float = 1e-3
    warmup_steps: int = 50


FULL = AblationSizes()
QUICK = AblationSizes(
    K=1, L=2, hidden_channels=8, batch_size=16, steps=4, eval_points=2, num_test=32, num_train=128
)


def run_key(record: dict[str, Any]) -> tuple[str, str, int]:
    """What identifies a run: dataset, variant, seed."""
    return record["dataset"], record["variant"], int(record["seed"])


def build_plan(
    *,
    datasets: dict[str, str],
    seeds: list[int],
    sizes: AblationSizes,
    output: Path,
    threads: int,
    train_options: dict[str, Any],
    model_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One spec per (dataset, variant, seed) that has no final record yet in ``output``.

    ``datasets`` maps each dataset's name to its cache file (see ``prepare_dataset``).
    """
    done = {run_key(r) for r in read_records(output / "records.jsonl") if r["step"] == sizes.steps}
    specs = []
    for dataset, cache in datasets.items():
        for seed in seeds:
            for variant in VARIANTS:
                if (dataset, variant, seed) in done:
                    continue
                specs.append(
                    {
                        "experiment": "ablation",
                        "dataset": dataset,
                        "cache": str(cache),
                        "variant": variant,
                        "seed": seed,
                        "sizes": dataclasses.asdict(sizes),
                        "threads": threads,
                        "output": str(output),
                        "train_options": train_options,
                        "model_options": model_options,
                    }
                )
    return specs


def run_one(spec: dict[str, Any]) -> None:
    """Train one variant from one seed, appending a record per evaluation point."""
    import torch

    from flowkit.presets.glow import GlowConfig, build_glow

    began = time.perf_counter()
    torch.set_num_threads(spec["threads"])
    sizes = AblationSizes(**spec["sizes"])
    output = Path(spec["output"])
    dataset, variant, seed = spec["dataset"], spec["variant"], spec["seed"]
    permutation, coupling = variant.split("/")
    train, test = load_prepared(spec["cache"])
    config = GlowConfig(
        K=sizes.K,
        L=sizes.L,
        coupling=coupling,
        input_shape=SHAPES[dataset],
        hidden_channels=sizes.hidden_channels,
        permutation=permutation,
        seed=seed,
        **spec["model_options"],
    )
    flow = build_glow(config)
    used = min(len(train), sizes.num_train or len(train))
    steps_per_epoch = used // sizes.batch_size
    run_dir = output / "runs" / dataset / variant.replace("/", "-") / f"seed{seed}"
    base = {
        "data": spec["cache"],
        "output": str(run_dir),
        "batch_size": sizes.batch_size,
        "init_batch_size": min(256, used),
        "epochs": math.ceil(sizes.steps / steps_per_epoch) + 1,
        "lr": sizes.lr,
        "warmup_epochs": sizes.warmup_steps / steps_per_epoch,
        # Averaged weights lag far behind within a few hundred steps: every variant is scored
        # with its raw weights.
        "ema": False,
        "eval_every": 10**6,
        "sample_every": 10**6,
        "temperatures": (0.7,),
        "num_samples": 16,
        "num_train": sizes.num_train,
        "seed": seed,
        "device": "cpu",
        "progress": False,
    }
    settings = train_config(base, spec["train_options"])
    test_images = test.images[: sizes.num_test]
    recorded = {
        r["step"]
        for r in read_records(output / "records.jsonl")
        if run_key(r) == (dataset, variant, seed)
    }
    every = sizes.steps / sizes.eval_points
    stops = [{"max_steps": round(every * i)} for i in range(1, sizes.eval_points + 1)]

    def after(trainer: Any, stop: dict[str, Any]) -> None:
        state = trainer.state
        if state.step in recorded:
            return
        flow_used = trainer.averaged_flow
        flow_used.eval()
        bpd = evaluate_bpd(flow_used.log_prob, test_images)
        append_record(
            output / "records.jsonl",
            {
                "dataset": dataset,
                "variant": variant,
                "permutation": permutation,
                "coupling": coupling,
                "seed": seed,
                "step": state.step,
                "test_bpd": bpd,
                "train_seconds": round(state.elapsed, 3),
                "wall_seconds": round(time.perf_counter() - began, 3),
                "num_test": len(test_images),
                "threads": spec["threads"],
            },
        )
        recorded.add(state.step)

    train_in_chunks(flow, settings, train, None, stops, model_config=config, after=after)


@dataclass
class VariantSummary:
    """A variant's results on one dataset over its seeds."""

    variant: str
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    finals: list[float]
    train_seconds: float

    @property
    def final_mean(self) -> float:
        return statistics.fmean(self.finals)

    @property
    def final_se(self) -> float:
        n = len(self.finals)
        return statistics.stdev(self.finals) / math.sqrt(n) if n > 1 else float("nan")


def summarize(records: list[dict[str, Any]], steps: int) -> dict[str, list[VariantSummary]]:
    """Per dataset, per variant (in :data:`VARIANTS` order): curves over seeds and final values.

    A seed counts once it reached ``steps``; curves use the steps every counted seed recorded.
    """
    result: dict[str, list[VariantSummary]] = {}
    datasets = sorted({r["dataset"] for r in records})
    for dataset in datasets:
        summaries = []
        for variant in VARIANTS:
            runs: dict[int, dict[int, dict[str, Any]]] = {}
            for r in records:
                if r["dataset"] == dataset and r["variant"] == variant:
                    runs.setdefault(int(r["seed"]), {})[int(r["step"])] = r
            finished = {seed: points for seed, points in runs.items() if steps in points}
            if not finished:
                continue
            shared = sorted(set.intersection(*(set(p) for p in finished.values())))
            values = [[finished[s][step]["test_bpd"] for s in sorted(finished)] for step in shared]
            summaries.append(
                VariantSummary(
                    variant=variant,
                    steps=shared,
                    mean=[statistics.fmean(v) for v in values],
                    low=[min(v) for v in values],
                    high=[max(v) for v in values],
                    finals=[finished[s][steps]["test_bpd"] for s in sorted(finished)],
                    train_seconds=statistics.fmean(
                        finished[s][steps]["train_seconds"] for s in finished
                    ),
                )
            )
        result[dataset] = summaries
    return result


def render_table(summaries: dict[str, list[VariantSummary]], steps: int) -> str:
    """Markdown: per dataset, the final test bits/dim of each variant and their ordering."""
    lines = ["## Ablation: permutation x coupling (Glow, Figure 3)", ""]
    for dataset, rows in summaries.items():
        lines += [
            f"### {dataset}",
            "",
            f"Test bits/dim after {steps} steps: mean +- standard error over seeds.",
            "",
            "| variant | test bits/dim | seeds | training time (s, mean) |",
            "|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row.variant} | {row.final_mean:.4f} +- {row.final_se:.4f} | "
                f"{len(row.finals)} | {row.train_seconds:.1f} |"
            )
        ordered = sorted(rows, key=lambda row: row.final_mean)
        lines += ["", "Ordering (best first): " + " < ".join(r.variant for r in ordered), ""]
    return "\n".join(lines)


def write_figures(summaries: dict[str, list[VariantSummary]], figures: Path) -> list[Path]:
    """One PNG per dataset: additive and affine panels, a curve and min-max band per permutation."""
    paths = []
    for dataset, rows in summaries.items():
        panels = []
        for coupling in COUPLINGS:
            series = [
                Series(r.variant.split("/")[0], r.steps, r.mean, r.low, r.high)
                for r in rows
                if r.variant.endswith("/" + coupling)
            ]
            panels.append(Panel(f"{dataset}, {coupling} coupling", "step", "test bits/dim", series))
        paths.append(plot_panels(figures / f"ablation-{dataset}.png", panels))
    return paths
