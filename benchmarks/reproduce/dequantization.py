"""Flow++'s dequantization ablation: variational against uniform noise, the same flow otherwise.

The ``flowpp-small`` run preset's model on Fashion-MNIST, once with its learned dequantizer and
once with ``dequantizer_couplings=0`` (uniform noise), from several seeds, for the same number of
steps at the preset's training settings. Both are scored as distributions over integer images on
the same test images with the same fixed noise, with the raw weights (an average lags far behind
within a few hundred steps): the one-draw bound (the training objective) and the
importance-weighted bound. The uniform variant has fewer parameters: the dequantizer's.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import (
    append_record,
    load_prepared,
    read_records,
    train_config,
    train_in_chunks,
)
from benchmarks.reproduce.frontier import evaluator

__all__ = [
    "FULL",
    "QUICK",
    "VARIANTS",
    "DequantizationSizes",
    "build_plan",
    "render_table",
    "run_one",
    "summarize",
]

PRESET = "flowpp-small"
VARIANTS = ("variational", "uniform")


@dataclass(frozen=True)
class DequantizationSizes:
    """Steps, evaluation and (for smoke tests) overrides of the preset's model."""

    steps: int = 300
    num_test: int = 2000
    iw_samples: int = 16
    num_train: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


FULL = DequantizationSizes()
QUICK = DequantizationSizes(
    steps=3,
    num_test=32,
    iw_samples=4,
    num_train=128,
    overrides={
        "filters": 8,
        "components": 2,
        "blocks": 0,
        "couplings": [1, 1, 1],
        "dequantizer_couplings": 1,
        "dequantizer_filters": 4,
        "dequantizer_blocks": 0,
        "feature_channels": 4,
        "feature_blocks": 0,
    },
)


def build_plan(
    *,
    cache: Path,
    seeds: list[int],
    sizes: DequantizationSizes,
    output: Path,
    train_options: dict[str, Any],
    model_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One spec per (variant, seed) without a record at ``sizes.steps`` in ``output``."""
    done = {
        (r["variant"], r["seed"])
        for r in read_records(output / "records.jsonl")
        if r["step"] == sizes.steps
    }
    return [
        {
            "experiment": "dequantization",
            "cache": str(cache),
            "variant": variant,
            "seed": seed,
            "sizes": dataclasses.asdict(sizes),
            "output": str(output),
            "train_options": train_options,
            "model_options": model_options,
        }
        for seed in seeds
        for variant in VARIANTS
        if (variant, seed) not in done
    ]


def run_one(spec: dict[str, Any]) -> None:
    """Train one variant from one seed (one thread) and append its record."""
    import torch

    from flowkit.data import ImageData
    from flowkit.presets.registry import build_model, config_from_dict
    from flowkit.presets.runs import get_run_preset

    torch.set_num_threads(1)
    began = time.perf_counter()
    sizes = DequantizationSizes(**spec["sizes"])
    output = Path(spec["output"])
    variant, seed = spec["variant"], spec["seed"]
    preset = get_run_preset(PRESET)
    values = {**preset.model, **sizes.overrides, **spec["model_options"], "seed": seed}
    if variant == "uniform":
        values["dequantizer_couplings"] = 0
    config = config_from_dict("flowpp", values)
    flow = build_model("flowpp", config)
    train, test = load_prepared(spec["cache"])
    if sizes.num_train is not None:
        train = ImageData(
            train.images[: sizes.num_train], train.labels[: sizes.num_train], train.source
        )
    test_images = test.images[: sizes.num_test]
    base = {
        **preset.train,
        "data": spec["cache"],
        "output": str(output / "runs" / variant / f"seed{seed}"),
        "epochs": 10**4,
        "eval_every": 10**6,
        "sample_every": 10**6,
        # The trainer still draws a grid at the end of each chunk: one image (the experiment
        # draws its own grids once, at the end).
        "temperatures": (1.0,),
        "num_samples": 1,
        "init_batch_size": min(preset.train.get("init_batch_size", 256), len(train)),
        "seed": seed,
        "device": "cpu",
        "progress": False,
    }
    settings = train_config(base, spec["train_options"])

    def after(trainer: Any, stop: dict[str, Any]) -> None:
        score = evaluator(test_images, flow, settings.test_batch_size, trainer.process)
        append_record(
            output / "records.jsonl",
            {
                "variant": variant,
                "seed": seed,
                "step": trainer.state.step,
                "parameters": sum(p.numel() for p in flow.parameters()),
                "bpd": score(trainer.flow, 1),
                "iw_bpd": score(trainer.flow, sizes.iw_samples),
                "iw_samples": sizes.iw_samples,
                "num_test": len(test_images),
                "train_seconds": round(trainer.state.elapsed, 3),
                "wall_seconds": round(time.perf_counter() - began, 3),
            },
        )

    stops = [{"max_steps": sizes.steps}]
    train_in_chunks(
        flow, settings, train, None, stops, model_name="flowpp", model_config=config, after=after
    )


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return statistics.fmean(values), se


def summarize(records: list[dict[str, Any]], steps: int) -> dict[str, dict[str, Any]]:
    """Per variant with runs at ``steps``: seeds, parameters, mean and s.e. of both bounds."""
    result = {}
    for variant in VARIANTS:
        finals = {r["seed"]: r for r in records if r["variant"] == variant and r["step"] == steps}
        if not finals:
            continue
        rows = [finals[s] for s in sorted(finals)]
        result[variant] = {
            "seeds": sorted(finals),
            "parameters": rows[0]["parameters"],
            "iw_samples": rows[0]["iw_samples"],
            "num_test": rows[0]["num_test"],
            "bpd": _mean_se([r["bpd"] for r in rows]),
            "iw_bpd": _mean_se([r["iw_bpd"] for r in rows]),
        }
    return result


def render_table(summary: dict[str, dict[str, Any]], steps: int) -> str:
    """Markdown: test bits/dim (mean +- standard error over seeds) per dequantization."""
    lines = ["## Dequantization: variational against uniform (Flow++, Fashion-MNIST)", ""]
    if not summary:
        return "\n".join(lines + ["No finished runs.", ""])
    first = next(iter(summary.values()))
    iw = first["iw_samples"]
    lines += [
        f"Test bits/dim on the first {first['num_test']} test images after {steps} steps (raw "
        "weights): mean +- standard error over seeds.",
        "",
        f"| dequantization | parameters | seeds | 1 draw | IW {iw} |",
        "|---|---|---|---|---|",
    ]
    for variant, row in summary.items():
        lines.append(
            f"| {variant} | {row['parameters']} | {len(row['seeds'])} | "
            f"{row['bpd'][0]:.4f} +- {row['bpd'][1]:.4f} | "
            f"{row['iw_bpd'][0]:.4f} +- {row['iw_bpd'][1]:.4f} |"
        )
    return "\n".join(lines) + "\n"
