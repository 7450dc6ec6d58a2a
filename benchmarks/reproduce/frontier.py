"""Glow, Flow++ and TarFlow at CPU scale: test bits/dim after equal training time, equal size.

Per dataset and seed, three models train one after the other for ``--minutes`` of training time
each (the evaluations stop the clock): the ``glow-small`` run preset's model, the
``tarflow-small`` one (patches of 7 on 28x28 images, 4 on 32x32) and the ``flowpp-small`` one,
each with its width (TarFlow's ``channels``, Flow++'s ``filters``) chosen so that its parameter
count is within 10% of the Glow model's. Each trains at its run preset's optimizer settings,
except the warm-up: the same ``--warmup-steps`` linear warm-up for all three (0: none), then the
constant peak rate; an epoch-based warm-up would give each model a different share of the
budget. Each model sees its official data range: Glow and Flow++ their presets' (flowkit's
[-1/2, 1/2]; Flow++'s logit preprocessing is part of its flow), TarFlow the official [-1, 1]
(``data_scale`` 2, whose log-determinant is part of the density, so bits/dim compare). TarFlow
trains and is scored without its Gaussian training noise (``noise_std`` 0): with noise it would
model a smoothed density, whose bits/dim do not compare. The seed seeds both the weights and the
training (batch order, dequantization noise).

Every model is scored as a distribution over integer images (a plain flow through uniform
dequantization, Flow++ through its learned dequantizer) on the same first ``--num-test`` test
images with the same fixed noise: the one-draw bound (the training objective) at each evaluation
point, and at the end also the importance-weighted bound with ``--iw-samples`` draws, both with
the raw and with the averaged weights. Beside the scores, each run measures its training
throughput (images per second of training time) and the time to draw ``sample_images`` images
at temperature 1 with the averaged weights (TarFlow decoding with its key/value cache), on the
same threads. The table gives the mean and standard error over seeds; the curves the mean and
the min-max band.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
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
    "check_settings",
    "evaluator",
    "match_width",
    "model_configs",
    "render_table",
    "run_model",
    "summarize",
    "time_sampling",
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
# Temperatures of the sample grids (drawn by the first seed's runs only).
TEMPERATURES = (1.0, 0.7)
# TarFlow's official data range, [-1, 1]: twice flowkit's.
TARFLOW_DATA_SCALE = 2.0


@dataclass(frozen=True)
class FrontierSizes:
    """Budget, warm-up, evaluation and (for smoke tests) model overrides per model name.

    Attributes:
        minutes: Training time per run.
        warmup_steps: Linear learning-rate warm-up of every model, in optimizer steps (0: none).
        eval_points: Evaluations per run, evenly spaced in training time (the last at the end).
        num_test: Test images scored.
        iw_samples: Draws of the importance-weighted bound (at the end only).
        num_train: Use only the first this many training images (None: all).
        num_samples: Images of each sample grid.
        sample_images: Images drawn for the sampling time.
        overrides: Model config fields per model name.
    """

    minutes: float = 1.25
    warmup_steps: int = 10
    eval_points: int = 4
    num_test: int = 500
    iw_samples: int = 4
    num_train: int | None = None
    num_samples: int = 64
    sample_images: int = 16
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


# The full run's sizes fit 2 datasets x 3 seeds x 3 models in about 40 minutes on two idle
# cores: 22.5 minutes of training, the rest evaluation (13 passes over 500 test images per run),
# sampling, start-up and reading the CIFAR-10 archive once. Ten warm-up steps: Flow++ makes about
# 30 steps in 1.25 CIFAR-10 minutes, so a longer warm-up would again keep it below its peak rate.
FULL = FrontierSizes()
QUICK = FrontierSizes(
    minutes=0.005,
    warmup_steps=2,
    eval_points=2,
    num_test=32,
    iw_samples=4,
    num_train=256,
    num_samples=4,
    sample_images=2,
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
            config.update(
                patch_size=PATCH_SIZES[shape[1]], noise_std=0.0, data_scale=TARFLOW_DATA_SCALE
            )
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


def _protocol(spec: dict[str, Any]) -> dict[str, Any]:
    """What a finished run must share with a planned one to stand for it (as JSON reads it)."""
    import json

    return json.loads(
        json.dumps({k: spec[k] for k in ("config", "sizes", "threads", "train_options")})
    )


def build_plan(
    *,
    datasets: dict[str, Path],
    sizes: FrontierSizes,
    output: Path,
    figures: Path,
    threads: int,
    seeds: list[int],
    train_options: dict[str, Any],
    model_options: dict[str, Any],
) -> list[dict[str, Any]]:
    """One spec per (dataset, seed, model) without a finished run of the same protocol.

    Per dataset, the seeds come one after the other, each training the three models in turn, so
    that a drift in the machine's speed touches every model alike. A finished run counts only if
    its config, sizes, threads and training options are the planned ones; the first seed's runs
    also draw the sample grids.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"frontier expects distinct seeds, got {seeds}")
    done = {
        (r["dataset"], r["model"], r.get("seed")): r.get("protocol")
        for r in read_records(output / "records.jsonl")
        if r.get("done")
    }
    specs = []
    for dataset, cache in datasets.items():
        chosen = model_configs(dataset, sizes, model_options)
        for seed in seeds:
            for model, entry in chosen.items():
                config = dict(entry["config"])
                if "seed" in config:
                    config["seed"] = seed
                spec = {
                    "experiment": "frontier",
                    "dataset": dataset,
                    "cache": str(cache),
                    "model": model,
                    **entry,
                    "config": config,
                    "sizes": dataclasses.asdict(sizes),
                    "threads": threads,
                    "seed": seed,
                    "grids": seed == seeds[0],
                    "output": str(output),
                    "figures": str(figures),
                    "train_options": train_options,
                }
                if done.get((dataset, model, seed)) != _protocol(spec):
                    specs.append(spec)
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


def _train_settings(spec: dict[str, Any], run_dir: Path, init_batch_size: int) -> Any:
    """The run's TrainConfig: its run preset's, the common warm-up, then the user's options."""
    from flowkit.presets.runs import get_run_preset

    preset = get_run_preset(spec["preset"])
    sizes = FrontierSizes(**spec["sizes"])
    base = {
        **preset.train,
        "data": spec["cache"],
        "output": str(run_dir),
        "epochs": 10**4,
        # The same warm-up in steps for every model (the presets' is in epochs).
        "warmup_epochs": 0.0,
        "warmup_steps": sizes.warmup_steps,
        # Evaluation happens between chunks, off the clock; none inside the timed loop.
        "eval_every": 10**6,
        "sample_every": 10**6,
        # The trainer still draws a grid at the end of each chunk: one image (the experiment
        # draws its own grids once, at the end).
        "temperatures": (1.0,),
        "num_samples": 1,
        "init_batch_size": min(preset.train.get("init_batch_size", 256), init_batch_size),
        "noise_std": 0.0,
        "seed": spec["seed"],
        "device": "cpu",
        "progress": False,
    }
    return train_config(base, spec["train_options"])


def check_settings(specs: list[dict[str, Any]]) -> None:
    """Build every planned run's TrainConfig, so that a bad option fails before any training."""
    for spec in specs:
        _train_settings(spec, Path(spec["output"]), 1)


def time_sampling(model: Any, count: int, seed: int) -> float:
    """Seconds to draw ``count`` samples at temperature 1 (after an untimed one-image draw).

    The flow's own sampler in eval mode without autograd: TarFlow's decodes with its key/value
    cache (its default). The untimed draw fills what is derived once per weight update.
    """
    import torch

    from flowkit.distributions import Dequantized

    flow = model.flow if isinstance(model, Dequantized) else model
    training = flow.training
    flow.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow.sample(1)
            started = time.perf_counter()
            flow.sample(count)
            return time.perf_counter() - started
    finally:
        flow.train(training)


def run_model(spec: dict[str, Any]) -> None:
    """Train one model for the budget; a record per evaluation, timings and a final record.

    An unfinished run of this model and seed starts again from scratch (its records are
    dropped), so that its training time is one uninterrupted measurement.
    """
    import torch

    from flowkit.data import ImageData
    from flowkit.presets.registry import build_model, config_from_dict
    from flowkit.train.samples import write_sample_grid

    torch.set_num_threads(spec["threads"])
    sizes = FrontierSizes(**spec["sizes"])
    output, figures = Path(spec["output"]), Path(spec["figures"])
    records_path = output / "records.jsonl"
    dataset, model, seed = spec["dataset"], spec["model"], spec["seed"]
    key = (dataset, model, seed)
    kept = [
        r for r in read_records(records_path) if (r["dataset"], r["model"], r.get("seed")) != key
    ]
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records_path.write_text("".join(_line(r) for r in kept))
    run_dir = output / "runs" / dataset / model / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)

    train, test = load_prepared(spec["cache"])
    if sizes.num_train is not None:
        train = ImageData(
            train.images[: sizes.num_train], train.labels[: sizes.num_train], train.source
        )
    test_images = test.images[: sizes.num_test]
    config = config_from_dict(spec["family"], spec["config"])
    flow = build_model(spec["family"], config)
    settings = _train_settings(spec, run_dir, len(train))
    common = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
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
    sampling_seconds = time_sampling(trainer.averaged_flow, sizes.sample_images, seed)
    grids = {}
    if spec.get("grids", True):
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
    train_seconds = trainer.state.elapsed
    append_record(
        records_path,
        {
            **common,
            "done": True,
            "step": trainer.state.step,
            "train_seconds": round(train_seconds, 3),
            "images_per_second": trainer.state.step
            * settings.batch_size
            / max(train_seconds, 1e-9),
            "sample_images": sizes.sample_images,
            "sampling_seconds": round(sampling_seconds, 4),
            "warmup_steps": settings.warmup_steps,
            "warmup_epochs": settings.warmup_epochs,
            "config": spec["config"],
            "matching": spec.get("matching"),
            "sample_grids": grids,
            "protocol": _protocol(spec),
        },
    )


def _line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record) + "\n"


def _mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (NaN for one value)."""
    n = len(values)
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return statistics.fmean(values), se


# The final scores the table shows: (weights, record key).
SCORES = (("raw", "bpd"), ("raw", "iw_bpd"), ("averaged", "bpd"), ("averaged", "iw_bpd"))


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, per model with finished seeds (in :data:`MODELS` order): seeds and statistics.

    A row holds ``seeds``, ``done`` (the first seed's final record), ``runs`` (every finished
    seed's final record), ``scores`` (``(weights, key) -> (mean, standard error)`` over seeds),
    ``steps``, ``images_per_second`` and ``sampling_seconds`` (means) and ``curve``: per
    evaluation point, the mean training seconds, mean bits/dim (raw weights, one draw) and the
    lowest and highest over seeds.
    """
    result: dict[str, dict[str, dict[str, Any]]] = {}
    finished = {(r["dataset"], r["model"], r["seed"]): r for r in records if r.get("done")}
    for dataset in sorted({d for d, _, _ in finished}):
        rows = {}
        for model in MODELS:
            seeds = sorted(s for d, m, s in finished if (d, m) == (dataset, model))
            if not seeds:
                continue
            runs = [finished[dataset, model, s] for s in seeds]
            finals: dict[tuple[str, str], list[float]] = {score: [] for score in SCORES}
            curves = []
            for seed in seeds:
                points = [
                    r
                    for r in records
                    if (r["dataset"], r["model"], r.get("seed")) == (dataset, model, seed)
                    and "bpd" in r
                ]
                final = {r["weights"]: r for r in points if r["final"]}
                for weights, key in SCORES:
                    finals[weights, key].append(final[weights][key])
                curves.append(
                    sorted((r["train_seconds"], r["bpd"]) for r in points if r["weights"] == "raw")
                )
            length = min(len(c) for c in curves)
            rows[model] = {
                "seeds": seeds,
                "done": runs[0],
                "runs": runs,
                "scores": {score: _mean_se(values) for score, values in finals.items()},
                "steps": statistics.fmean(r["step"] for r in runs),
                "images_per_second": statistics.fmean(r["images_per_second"] for r in runs),
                "sampling_seconds": statistics.fmean(r["sampling_seconds"] for r in runs),
                "curve": [
                    (
                        statistics.fmean(c[i][0] for c in curves),
                        statistics.fmean(c[i][1] for c in curves),
                        min(c[i][1] for c in curves),
                        max(c[i][1] for c in curves),
                    )
                    for i in range(length)
                ],
            }
        result[dataset] = rows
    return result


def _cell(mean_se: tuple[float, float]) -> str:
    mean, se = mean_se
    return f"{mean:.4f}" if math.isnan(se) else f"{mean:.4f} +- {se:.4f}"


def _warmup(done: dict[str, Any]) -> str:
    if done.get("warmup_epochs"):
        return f"linear over {done['warmup_epochs']:g} epochs"
    if done.get("warmup_steps"):
        return f"linear over {done['warmup_steps']} steps"
    return "none"


def render_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per dataset, each model's size, speed and final test bits/dim over seeds."""
    lines = ["## Glow, Flow++ and TarFlow at equal training time", ""]
    for dataset, rows in summary.items():
        glow = rows.get("glow", {}).get("done", {}).get("parameters")
        first = next(iter(rows.values()))
        done = first["done"]
        sizes = done["protocol"]["sizes"]
        iw, count = sizes["iw_samples"], sizes["sample_images"]
        lines += [
            f"### {dataset}",
            "",
            f"{sizes['minutes']:g} minutes of training per run ({done['threads']} threads); "
            f"warm-up, the same for every model: {_warmup(done)}, then each run preset's "
            "constant rate. Test "
            f"bits/dim on the first {done['num_test']} test images: one draw of the "
            "dequantization noise, and the importance-weighted bound "
            f"with {iw} draws; mean +- standard error over the seeds. Throughput: training "
            f"images per second of training time; sampling: seconds to draw {count} images at "
            "temperature 1 (averaged weights; TarFlow with its key/value cache).",
            "",
            "| model | parameters | / Glow's | seeds | steps | images/s | "
            f"sampling {count} (s) | raw, 1 draw | raw, IW {iw} | averaged, 1 draw | "
            f"averaged, IW {iw} |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, row in rows.items():
            parameters = row["done"]["parameters"]
            ratio = f"{parameters / glow:.3f}" if glow else ""
            scores = " | ".join(_cell(row["scores"][score]) for score in SCORES)
            lines.append(
                f"| {model} | {parameters} | {ratio} | {len(row['seeds'])} | "
                f"{row['steps']:.0f} | {row['images_per_second']:.1f} | "
                f"{row['sampling_seconds']:.3f} | {scores} |"
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
    """Test bits/dim (raw weights, one draw) against training minutes: mean and min-max band."""
    series = [
        Series(
            f"{model} ({len(row['seeds'])} seeds)",
            [t / 60.0 for t, _, _, _ in row["curve"]],
            [b for _, b, _, _ in row["curve"]],
            low=[lo for _, _, lo, _ in row["curve"]],
            high=[hi for _, _, _, hi in row["curve"]],
        )
        for model, row in summary[dataset].items()
    ]
    panel = Panel(f"{dataset}, equal training time", "training minutes", "test bits/dim", series)
    return plot_panels(path, [panel], columns=1)
