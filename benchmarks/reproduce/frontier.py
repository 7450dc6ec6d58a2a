"""Glow, Flow++ and TarFlow at CPU scale: test bits/dim after equal training time, equal size.

Per dataset, three models train one after the other for ``--minutes`` of training time each (the
evaluations stop the clock): the ``glow-small`` run preset's model, the ``tarflow-small`` one
(patches of 7 on 28x28 images, 4 on 32x32) and the ``flowpp-small`` one, each with its width
(TarFlow's ``channels``, Flow++'s ``filters``) chosen so that its parameter count is within 10% of
the Glow model's. Each trains at
its run preset's settings. TarFlow trains and is scored without its Gaussian training noise
(``noise_std`` 0): with noise it would model a smoothed density, whose bits/dim do not compare.

Every model is scored as a distribution over integer images (a plain flow through uniform
dequantization, Flow++ through its learned dequantizer) on the same first ``--num-test`` test
images with the same fixed noise: the one-draw bound (the training objective) at each evaluation
point, and at the end also the importance-weighted bound with ``--iw-samples`` draws, both with
the raw and with the averaged weights.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import (
    SHAPES,
    append_record,
    load_prepared,
    read_records,
    train_config,
    train_in_chunks,
)
from benchmarks.reproduce.plot import Panel, Series, plot_panels

__all__ = [
    "FULL",
    "MODELS",
    "QUICK",
    "FrontierSizes",
    "build_plan",
    "evaluator",
    "match_width",
    "model_configs",
    "render_table",
    "run_model",
    "summarize",
    "write_figure",
]

# Model -> (registered family, run preset); also the order the models train in.
MODELS = {
    "glow": ("glow", "glow-small"),
    "flowpp": ("flowpp", "flowpp-small"),
    "tarflow": ("tarflow", "tarflow-small"),
}
# TarFlow's patch side per image side: 16 patches of 49 values (28x28) or 64 of 16x3 (32x32).
PATCH_SIZES = {28: 7, 32: 4}
# Flow++ may differ from Glow's parameter count by at most this fraction.
TOLERANCE = 0.1
# Temperatures of the sample grids; 64 samples each.
TEMPERATURES = (1.0, 0.7)


@dataclass(frozen=True)
class FrontierSizes:
    """Budget, evaluation and (for smoke tests) model overrides per model name."""

    minutes: float = 4.0
    eval_points: int = 4
    num_test: int = 2000
    iw_samples: int = 16
    num_train: int | None = None
    num_samples: int = 64
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


FULL = FrontierSizes()
QUICK = FrontierSizes(
    minutes=0.005,
    eval_points=2,
    num_test=32,
    iw_samples=4,
    num_train=256,
    num_samples=4,
    overrides={
        # Flow++'s per-position normalisations fix about 10k parameters at 28x28: Glow is
        # widened to match them.
        "glow": {"K": 1, "hidden_channels": 32},
        "flowpp": {
            "components": 2,
            "blocks": 0,
            "couplings": (1, 1, 1),
            "dequantizer_couplings": 1,
            "dequantizer_filters": 4,
            "dequantizer_blocks": 0,
            "feature_channels": 4,
            "feature_blocks": 0,
        },
        "tarflow": {"channels": 16, "blocks": 2, "layers_per_block": 1, "heads": 2},
    },
)


def _count(family: str, config: dict[str, Any]) -> int:
    from flowkit.presets.registry import build_model

    return sum(p.numel() for p in build_model(family, config).parameters())


# The width each family's search varies, and the step of the search (the attention heads).
WIDTHS = {"flowpp": "filters", "tarflow": "channels"}


def _exact_count(family: str, config: Any) -> int:
    if family == "flowpp":
        from flowkit.presets.flowpp import flowpp_parameter_count

        return flowpp_parameter_count(config)
    from flowkit.presets.tarflow import _parameter_count

    return _parameter_count(config)


def match_width(
    family: str, config: dict[str, Any], target: int
) -> tuple[int, list[tuple[int, int]]]:
    """The width (``WIDTHS[family]``) whose parameter count is nearest ``target``, and the counts.

    Widths are multiples of ``heads``, from the smallest up to the first count past twice the
    target (the count grows with the width); counts come from the presets' exact formulas, so
    nothing is built. Raises a ValueError when the nearest count is further than
    :data:`TOLERANCE` from the target.
    """
    from flowkit.presets.registry import config_from_dict

    base = config_from_dict(family, config)
    width_field = WIDTHS[family]
    searched = []
    width = base.heads
    while True:
        count = _exact_count(family, dataclasses.replace(base, **{width_field: width}))
        searched.append((width, count))
        if count > 2 * target:
            break
        width += base.heads
    best, count = min(searched, key=lambda wc: abs(wc[1] - target))
    if abs(count - target) > TOLERANCE * target:
        raise ValueError(
            f"no {family} width gives a parameter count within {TOLERANCE:.0%} of {target}; the "
            f"nearest is {width_field}={best} with {count}"
        )
    return best, searched


def model_configs(
    dataset: str, sizes: FrontierSizes, model_options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per model: its family, config (plain values), parameter count and how it was chosen.

    ``model_options`` keys are ``MODEL.FIELD`` (``glow.K``, ``flowpp.components``).
    """
    from flowkit.presets.runs import get_run_preset

    unknown = sorted(k for k in model_options if k.split(".")[0] not in MODELS or "." not in k)
    if unknown:
        raise ValueError(
            f"frontier expects model options as MODEL.FIELD with MODEL in {list(MODELS)}, "
            f"got {unknown}"
        )
    shape = SHAPES[dataset]
    chosen: dict[str, dict[str, Any]] = {}
    for model, (family, preset) in MODELS.items():
        config = dict(get_run_preset(preset).model, input_shape=shape)
        if model == "tarflow":
            config.update(patch_size=PATCH_SIZES[shape[1]], noise_std=0.0)
        config.update(sizes.overrides.get(model, {}))
        config.update(
            {k.split(".", 1)[1]: v for k, v in model_options.items() if k.split(".")[0] == model}
        )
        chosen[model] = {"family": family, "preset": preset, "config": config}
    target = _count("glow", chosen["glow"]["config"])
    for family, width_field in WIDTHS.items():
        width, searched = match_width(family, chosen[family]["config"], target)
        chosen[family]["config"][width_field] = width
        chosen[family]["matching"] = {"target": target, width_field: width, "searched": searched}
    for entry in chosen.values():
        entry["config"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in entry["config"].items()
        }
        entry["parameters"] = _count(entry["family"], entry["config"])
    return chosen


def build_plan(
    *,
    datasets: dict[str, Path],
    sizes: FrontierSizes,
    output: Path,
    figures: Path,
    threads: int,
    seed: int,
    train_options: dict[str, Any],
    model_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One spec per (dataset, model) without a finished run in ``output``, in training order."""
    done = {
        (r["dataset"], r["model"]) for r in read_records(output / "records.jsonl") if r.get("done")
    }
    specs = []
    for dataset, cache in datasets.items():
        for model, chosen in model_configs(dataset, sizes, model_options).items():
            if (dataset, model) in done:
                continue
            specs.append(
                {
                    "experiment": "frontier",
                    "dataset": dataset,
                    "cache": str(cache),
                    "model": model,
                    **chosen,
                    "sizes": dataclasses.asdict(sizes),
                    "threads": threads,
                    "seed": seed,
                    "output": str(output),
                    "figures": str(figures),
                    "train_options": train_options,
                }
            )
    return specs


def evaluator(test_images: Any, flow: Any, batch_size: int, process: Any) -> Any:
    """``score(model, draws)``: test bits/dim, the importance-weighted bound for ``draws`` > 1.

    The trainer's own evaluation: the same fixed noise for every model, in eval mode.
    """
    from flowkit.data import ImageData
    from flowkit.train.data import as_training_data

    # The model's own bits (a plain flow: 8), as the trainer evaluates it.
    data = as_training_data(ImageData(test_images, None, "test subset"))
    data.check_against(flow, "test")

    def score(model: Any, draws: int) -> float:
        training = model.training
        model.eval()
        try:
            return data.evaluate(model, batch_size, process, num_samples=draws)
        finally:
            model.train(training)

    return score


def run_model(spec: dict[str, Any]) -> None:
    """Train one model for the budget; a record per evaluation, sample grids and a final record.

    An unfinished run of this model starts again from scratch (its records are dropped), so
    that its training time is one uninterrupted measurement.
    """
    import torch

    from flowkit.data import ImageData
    from flowkit.presets.registry import build_model, config_from_dict
    from flowkit.presets.runs import get_run_preset
    from flowkit.train.samples import write_sample_grid

    torch.set_num_threads(spec["threads"])
    sizes = FrontierSizes(**spec["sizes"])
    output, figures = Path(spec["output"]), Path(spec["figures"])
    records_path = output / "records.jsonl"
    dataset, model = spec["dataset"], spec["model"]
    kept = [r for r in read_records(records_path) if (r["dataset"], r["model"]) != (dataset, model)]
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records_path.write_text("".join(_line(r) for r in kept))
    run_dir = output / "runs" / dataset / model
    shutil.rmtree(run_dir, ignore_errors=True)

    train, test = load_prepared(spec["cache"])
    if sizes.num_train is not None:
        train = ImageData(
            train.images[: sizes.num_train], train.labels[: sizes.num_train], train.source
        )
    test_images = test.images[: sizes.num_test]
    preset = get_run_preset(spec["preset"])
    config = config_from_dict(spec["family"], spec["config"])
    flow = build_model(spec["family"], config)
    base = {
        **preset.train,
        "data": spec["cache"],
        "output": str(run_dir),
        "epochs": 10**4,
        # Evaluation happens between chunks, off the clock; none inside the timed loop.
        "eval_every": 10**6,
        "sample_every": 10**6,
        # The trainer still draws a grid at the end of each chunk: one image (the experiment
        # draws its own grids once, at the end).
        "temperatures": (1.0,),
        "num_samples": 1,
        "init_batch_size": min(preset.train.get("init_batch_size", 256), len(train)),
        "noise_std": 0.0,
        "seed": spec["seed"],
        "device": "cpu",
        "progress": False,
    }
    settings = train_config(base, spec["train_options"])
    common = {
        "dataset": dataset,
        "model": model,
        "parameters": spec["parameters"],
        "num_test": len(test_images),
        "threads": spec["threads"],
    }
    every = sizes.minutes / sizes.eval_points
    stops = [{"max_minutes": every * i} for i in range(1, sizes.eval_points + 1)]

    def after(trainer: Any, stop: dict[str, Any]) -> None:
        score = evaluator(test_images, flow, settings.test_batch_size, trainer.process)
        final = stop is stops[-1]
        weights = [("raw", trainer.flow)]
        if final:
            weights.append(("averaged", trainer.averaged_flow))
        for name, evaluated in weights:
            started = time.perf_counter()
            bpd = score(evaluated, 1)
            iw_bpd = score(evaluated, sizes.iw_samples) if final else None
            append_record(
                records_path,
                {
                    **common,
                    "weights": name,
                    "final": final,
                    "step": trainer.state.step,
                    "train_seconds": round(trainer.state.elapsed, 3),
                    "bpd": bpd,
                    "iw_bpd": iw_bpd,
                    "iw_samples": sizes.iw_samples,
                    "eval_seconds": round(time.perf_counter() - started, 3),
                },
            )

    trainer = train_in_chunks(
        flow,
        settings,
        train,
        None,
        stops,
        model_name=spec["family"],
        model_config=config,
        after=after,
    )
    grids = {}
    for temperature in TEMPERATURES:
        path = figures / f"frontier-{dataset}-{model}-t{temperature:g}.png"
        bad = write_sample_grid(
            trainer.averaged_flow,
            path,
            num=sizes.num_samples,
            temperature=temperature,
            nrow=int(math.isqrt(sizes.num_samples)),
        )
        grids[path.name] = bad
    append_record(
        records_path,
        {
            **common,
            "done": True,
            "step": trainer.state.step,
            "train_seconds": round(trainer.state.elapsed, 3),
            "config": spec["config"],
            "matching": spec.get("matching"),
            "sample_grids": grids,
        },
    )


def _line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, per finished model (in :data:`MODELS` order): its curve and final scores."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    finished = {(r["dataset"], r["model"]): r for r in records if r.get("done")}
    for dataset in sorted({d for d, _ in finished}):
        rows = {}
        for model in MODELS:
            if (dataset, model) not in finished:
                continue
            points = [
                r for r in records if (r["dataset"], r["model"]) == (dataset, model) and "bpd" in r
            ]
            rows[model] = {
                "done": finished[dataset, model],
                "curve": sorted(
                    (r["train_seconds"], r["bpd"]) for r in points if r["weights"] == "raw"
                ),
                "final": {r["weights"]: r for r in points if r["final"]},
            }
        result[dataset] = rows
    return result


def render_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per dataset, each model's size, steps, time and final test bits/dim."""
    lines = ["## Glow, Flow++ and TarFlow at equal training time", ""]
    for dataset, rows in summary.items():
        glow = rows.get("glow", {}).get("done", {}).get("parameters")
        iw = next(iter(rows.values()))["final"]["raw"]["iw_samples"]
        lines += [
            f"### {dataset}",
            "",
            f"Test bits/dim on the first {next(iter(rows.values()))['done']['num_test']} test "
            f"images: one draw of the dequantization noise, and the importance-weighted bound "
            f"with {iw} draws.",
            "",
            "| model | parameters | / Glow's | steps | training time (s) | raw, 1 draw | "
            f"raw, IW {iw} | averaged, 1 draw | averaged, IW {iw} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for model, row in rows.items():
            done, final = row["done"], row["final"]
            ratio = f"{done['parameters'] / glow:.3f}" if glow else ""
            lines.append(
                f"| {model} | {done['parameters']} | {ratio} | {done['step']} | "
                f"{done['train_seconds']:.0f} | {final['raw']['bpd']:.4f} | "
                f"{final['raw']['iw_bpd']:.4f} | {final['averaged']['bpd']:.4f} | "
                f"{final['averaged']['iw_bpd']:.4f} |"
            )
        notes = []
        for family, width_field in WIDTHS.items():
            matching = rows.get(family, {}).get("done", {}).get("matching")
            if matching:
                notes.append(
                    f"{family} width: {width_field}={matching[width_field]}, the nearest of "
                    f"{len(matching['searched'])} widths to Glow's {matching['target']} "
                    "parameters."
                )
        if notes:
            lines += ["", *notes]
        lines.append("")
    return "\n".join(lines)


def write_figure(summary: dict[str, dict[str, dict[str, Any]]], dataset: str, path: Path) -> Path:
    """Test bits/dim (raw weights, one draw) against training minutes, one curve per model."""
    series = [
        Series(model, [s / 60.0 for s, _ in row["curve"]], [b for _, b in row["curve"]])
        for model, row in summary[dataset].items()
    ]
    panel = Panel(f"{dataset}, equal training time", "training minutes", "test bits/dim", series)
    return plot_panels(path, [panel], columns=1)
