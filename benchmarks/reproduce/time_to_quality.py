"""Time to quality: flowkit's Glow against normflows' on Fashion-MNIST, equal wall-clock budgets.

Both libraries build the same architecture (``benchmarks/models.py``: the ``glow-small`` run
preset's model) and train, one after the other, for ``--minutes`` of training time each, at their
own documented settings: normflows with its Glow example's loop (Adamax, learning rate 1e-3, weight
decay 1e-5, batch 128, skipping non-finite losses) under the tuned allocator, flowkit with its
``Trainer`` at the ``glow-small`` preset's training settings. At regular intervals of training time
the clock stops and the test bits/dim is measured on a fixed subset of the test set, the same
dequantised points for both (flowkit: with the averaged and with the raw weights).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import (
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
    "LIBRARIES",
    "QUICK",
    "TimeSizes",
    "build_plan",
    "render_table",
    "run_library",
    "summarize",
    "time_to_reach",
    "write_figure",
]

LIBRARIES = ("normflows", "flowkit")
CURVES = ("normflows", "flowkit-averaged", "flowkit-raw")
# normflows' Glow example (examples/glow.ipynb): Adamax(lr=1e-3, weight_decay=1e-5), batch 128.
NORMFLOWS_TRAINING = {"lr": 1e-3, "weight_decay": 1e-5, "batch_size": 128}


@dataclass(frozen=True)
class TimeSizes:
    """Budget and evaluation cadence; ``num_train`` None uses the whole training set."""

    minutes: float = 20.0
    eval_points: int = 10
    num_test: int = 2000
    num_train: int | None = None
    model_overrides: tuple[tuple[str, Any], ...] = ()


FULL = TimeSizes()
QUICK = TimeSizes(
    minutes=0.01,
    eval_points=2,
    num_test=32,
    num_train=256,
    model_overrides=(("K", 1), ("hidden_channels", 8)),
)


def architecture(sizes: TimeSizes) -> dict[str, Any]:
    """The shared model: the ``glow-small`` preset's, padded to a multiple of ``2**L``."""
    from flowkit.presets.runs import get_run_preset

    model = dict(get_run_preset("glow-small").model)
    model.update(dict(sizes.model_overrides))
    channels, height, width = model["input_shape"]
    factor = 2 ** model["L"]
    pad = (-height % factor) // 2
    return {
        "K": model["K"],
        "L": model["L"],
        "input_shape": [channels, height + 2 * pad, width + 2 * pad],
        "hidden_channels": model["hidden_channels"],
        "coupling": model["coupling"],
        "permutation": model.get("permutation", "conv1x1_lu"),
        "pad": pad,
    }


def build_plan(
    *,
    cache: Path,
    sizes: TimeSizes,
    output: Path,
    threads: int | None,
    seed: int,
    train_options: dict[str, Any],
    model_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One spec per library without a finished run in ``output`` (normflows first)."""
    done = {r["library"] for r in read_records(output / "records.jsonl") if r.get("done")}
    return [
        {
            "experiment": "time-to-quality",
            "library": library,
            "cache": str(cache),
            "minutes": sizes.minutes,
            "eval_points": sizes.eval_points,
            "num_test": sizes.num_test,
            "num_train": sizes.num_train,
            "architecture": architecture(sizes),
            "threads": threads,
            "seed": seed,
            "output": str(output),
            "train_options": train_options,
            "model_options": model_options,
        }
        for library in LIBRARIES
        if library not in done
    ]


def _padded(images: Any, pad: int) -> Any:
    import torch.nn.functional as F

    return F.pad(images, (pad,) * 4).contiguous() if pad else images


def run_library(spec: dict[str, Any]) -> None:
    """Train one library for the budget, appending a record per evaluation and a final one."""
    import dataclasses

    import torch

    from flowkit.data import ImageData

    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    output = Path(spec["output"])
    records_path = output / "records.jsonl"
    # An unfinished run of this library starts again: its old points are dropped.
    kept = [r for r in read_records(records_path) if r["library"] != spec["library"]]
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records_path.write_text("".join(_line(r) for r in kept))
    arch = spec["architecture"]
    train, test = load_prepared(spec["cache"])
    train = dataclasses.replace(train, images=_padded(train.images, arch["pad"]))
    if spec["num_train"] is not None:
        train = ImageData(
            train.images[: spec["num_train"]], train.labels[: spec["num_train"]], train.source
        )
    test_images = _padded(test.images[: spec["num_test"]], arch["pad"])
    common = {
        "library": spec["library"],
        "threads": spec["threads"] or torch.get_num_threads(),
        "num_test": len(test_images),
    }

    def record(curve: str, step: int, seconds: float, bpd: float, eval_seconds: float) -> None:
        append_record(
            records_path,
            {
                **common,
                "curve": curve,
                "step": step,
                "train_seconds": round(seconds, 3),
                "test_bpd": bpd,
                "eval_seconds": round(eval_seconds, 3),
            },
        )

    run = _run_normflows if spec["library"] == "normflows" else _run_flowkit
    steps, seconds = run(spec, train, test_images, record)
    append_record(records_path, {**common, "done": True, "step": steps, "train_seconds": seconds})


def _line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


def _run_normflows(spec: dict[str, Any], train: Any, test_images: Any, record: Any) -> tuple:
    """normflows' Glow example's training loop, timed without its evaluations."""
    import torch

    from benchmarks.models import build_model
    from flowkit.data import to_model_input

    arch = {k: v for k, v in spec["architecture"].items() if k != "pad"}
    torch.manual_seed(spec["seed"])
    model = build_model("normflows", arch, {})
    module = model.module
    optimizer = torch.optim.Adamax(
        module.parameters(),
        lr=NORMFLOWS_TRAINING["lr"],
        weight_decay=NORMFLOWS_TRAINING["weight_decay"],
    )
    batch_size = NORMFLOWS_TRAINING["batch_size"]
    generator = torch.Generator().manual_seed(spec["seed"])
    budget = 60.0 * spec["minutes"]
    every = budget / spec["eval_points"]
    next_eval, elapsed, step = every, 0.0, 0
    order, position = torch.randperm(len(train), generator=generator), 0
    while elapsed < budget:
        started = time.perf_counter()
        if position + batch_size > len(order):  # a new epoch, reshuffled (DataLoader shuffle)
            order, position = torch.randperm(len(train), generator=generator), 0
        index = order[position : position + batch_size]
        position += batch_size
        # The example's ToTensor, Scale(255/256) and Jitter(1/256): x / 256 + U(0, 1/256).
        x = to_model_input(train.images[index], 8, generator=generator) + 0.5
        optimizer.zero_grad()
        loss = -module.log_prob(x, None).mean()
        if torch.isfinite(loss):
            loss.backward()
            optimizer.step()
        step += 1
        elapsed += time.perf_counter() - started
        if elapsed >= next_eval or elapsed >= budget:
            started = time.perf_counter()
            module.eval()
            bpd = evaluate_bpd(lambda x, c: module.log_prob(x, None), test_images, shift=0.5)
            module.train()
            record("normflows", step, elapsed, bpd, time.perf_counter() - started)
            next_eval += every
    return step, elapsed


def _run_flowkit(spec: dict[str, Any], train: Any, test_images: Any, record: Any) -> tuple:
    """flowkit's Trainer at the glow-small preset's settings, stopped at each evaluation time."""
    import shutil

    from flowkit.presets.glow import GlowConfig, build_glow
    from flowkit.presets.runs import get_run_preset

    arch = {k: v for k, v in spec["architecture"].items() if k != "pad"}
    preset = get_run_preset("glow-small")
    config = GlowConfig(
        **{**arch, "input_shape": tuple(arch["input_shape"])},
        seed=spec["seed"],
        **spec["model_options"],
    )
    flow = build_glow(config)
    run_dir = Path(spec["output"]) / "flowkit-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    base = {
        **preset.train,
        "data": spec["cache"],
        "output": str(run_dir),
        "pad": 0,
        "epochs": 10**4,
        # Evaluation happens between chunks, off the clock; none inside the timed loop.
        "eval_every": 10**6,
        "sample_every": 10**6,
        "init_batch_size": min(preset.train.get("init_batch_size", 256), len(train)),
        "seed": spec["seed"],
        "device": "cpu",
        "progress": False,
    }
    settings = train_config(base, spec["train_options"])
    every = spec["minutes"] / spec["eval_points"]
    stops = [{"max_minutes": every * i} for i in range(1, spec["eval_points"] + 1)]

    def after(trainer: Any, stop: dict[str, Any]) -> None:
        state = trainer.state
        for curve, evaluated in (
            ("flowkit-averaged", trainer.averaged_flow),
            ("flowkit-raw", trainer.flow),
        ):
            started = time.perf_counter()
            bpd = evaluate_bpd(evaluated.log_prob, test_images)
            record(curve, state.step, state.elapsed, bpd, time.perf_counter() - started)

    trainer = train_in_chunks(flow, settings, train, None, stops, model_config=config, after=after)
    return trainer.state.step, trainer.state.elapsed


def time_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """The first time a curve of ``(seconds, bpd)`` points reaches ``target`` or below.

    Linear between evaluations (from the first point on); None when it never does.
    """
    previous = None
    for seconds, bpd in sorted(points):
        if bpd <= target:
            if previous is None or previous[1] == bpd:
                return seconds
            (t0, b0), (t1, b1) = previous, (seconds, bpd)
            return t0 + (b0 - target) / (b0 - b1) * (t1 - t0)
        previous = (seconds, bpd)
    return None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Curves per library and the time flowkit needs for normflows' final test bits/dim."""
    curves = {
        curve: sorted(
            (r["train_seconds"], r["test_bpd"])
            for r in records
            if r.get("curve") == curve and math.isfinite(r["test_bpd"])
        )
        for curve in CURVES
    }
    finals = {r["library"]: r for r in records if r.get("done")}
    summary: dict[str, Any] = {"curves": curves, "finals": finals}
    if curves["normflows"]:
        budget, target = curves["normflows"][-1]
        summary["target_bpd"], summary["budget_seconds"] = target, budget
        for curve in ("flowkit-averaged", "flowkit-raw"):
            reached = time_to_reach(curves[curve], target)
            summary[curve] = None if reached is None else reached / budget
    return summary


def render_table(summary: dict[str, Any]) -> str:
    """Markdown: each curve's final point, and flowkit's time to normflows' final quality."""
    lines = [
        "## Time to quality: flowkit against normflows (Fashion-MNIST)",
        "",
        "| curve | steps | training time (s) | final test bits/dim |",
        "|---|---|---|---|",
    ]
    for curve, points in summary["curves"].items():
        if not points:
            continue
        library = curve.split("-")[0]
        steps = summary["finals"].get(library, {}).get("step", "")
        lines.append(f"| {curve} | {steps} | {points[-1][0]:.0f} | {points[-1][1]:.4f} |")
    if "target_bpd" in summary:
        lines += [
            "",
            f"normflows' final test bits/dim: {summary['target_bpd']:.4f} after "
            f"{summary['budget_seconds']:.0f} s of training.",
            "",
        ]
        for curve in ("flowkit-averaged", "flowkit-raw"):
            ratio = summary[curve]
            text = "not reached within its budget" if ratio is None else f"{ratio:.3f}"
            lines.append(f"- {curve}: time to reach it / normflows' budget = {text}")
    return "\n".join(lines) + "\n"


def write_figure(summary: dict[str, Any], path: Path) -> Path:
    """Test bits/dim against training minutes, both libraries (flowkit's raw weights dashed)."""
    labels = {
        "normflows": "normflows",
        "flowkit-averaged": "flowkit (averaged)",
        "flowkit-raw": "flowkit (raw)",
    }
    series = [
        Series(
            labels[curve],
            [seconds / 60.0 for seconds, _ in points],
            [bpd for _, bpd in points],
            dashed=curve == "flowkit-raw",
        )
        for curve, points in summary["curves"].items()
        if points
    ]
    panel = Panel("Fashion-MNIST, equal training time", "training minutes", "test bits/dim", series)
    return plot_panels(path, [panel], columns=1)
