"""``flowkit sample``, ``interpolate``, ``manipulate`` and ``presets``."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    CommandError,
    UsageError,
    atomic_output,
    check_new_outputs,
    check_positive,
    check_temperatures,
    first_overflow,
    overflow_message,
)
from flowkit.cli._runs import Run, check_common, check_indices, open_run, require_images, run_images

__all__: list[str] = []


# Temperatures of the image grids 'flowkit sample' draws by default.
IMAGE_TEMPERATURES = (0.0, 0.5, 0.7, 1.0)


# The guidance options of 'flowkit sample' and their defaults (no guidance).
GUIDANCE_DEFAULTS = {
    "guidance": 0.0,
    "annealed_guidance": False,
    "guide_what": "ab",
    "attention_temperature": 1.0,
}


def sample_command(args: argparse.Namespace) -> int:
    """Sample image grids (one per temperature) or table rows (a CSV file)."""
    check_common(args)
    check_positive("--num", args.num)
    check_temperatures(args.temperatures)
    _check_guidance(args)
    run = open_run(args)
    with _decoding(args, run):
        if run.is_table:
            return _sample_rows(args, run)
        return _sample_images(args, run)


def _check_guidance(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise UsageError(f"--guidance expects a finite number >= 0, got {args.guidance}")
    if not (math.isfinite(args.attention_temperature) and args.attention_temperature > 0):
        raise UsageError(
            f"--attention-temperature expects a finite number > 0, got {args.attention_temperature}"
        )


def _decoding(args: argparse.Namespace, run: Run) -> contextlib.AbstractContextManager[None]:
    """The model's decoding with the guidance options (a TarFlow's), or nothing to change."""
    from flowkit.presets.tarflow import TarFlowFlow

    options = {name: getattr(args, name) for name in GUIDANCE_DEFAULTS}
    flow = None if run.is_table else run.continuous_flow
    if not isinstance(flow, TarFlowFlow):
        if options != GUIDANCE_DEFAULTS:
            raise UsageError(
                "--guidance, --annealed-guidance, --guide-what and --attention-temperature "
                f"sample TarFlow models; the model in {run.checkpoint} is a "
                f"{type(run.continuous_flow).__name__}"
            )
        return contextlib.nullcontext()
    if options["guidance"] and flow.num_classes is None and options["attention_temperature"] == 1:
        raise UsageError(
            f"--guidance {options['guidance']:g}: the model in {run.checkpoint} has no classes; "
            "guide it against its tempered attention with --attention-temperature other than 1"
        )
    weight = options.pop("guidance")
    return flow.decoding(weight, **options)


def _sample_images(args: argparse.Namespace, run: Run) -> int:
    import torch

    from flowkit.train.samples import write_sample_grid

    if args.context:
        raise UsageError(
            "--context is for table models; class-conditional image models take --label"
        )
    if args.label is not None:
        if run.num_classes is None:
            raise UsageError(
                f"--label {args.label}: the model in {run.checkpoint} is not class-conditional"
            )
        if not 0 <= args.label < run.num_classes:
            raise UsageError(f"--label expects a class in [0, {run.num_classes}), got {args.label}")
    output = Path(args.output) if args.output else run.directory / "samples"
    if output.is_file():
        raise UsageError(f"--output expects a directory for image grids, got the file {output}")
    temperatures = args.temperatures or IMAGE_TEMPERATURES
    paths = [output / f"samples_t{temperature:.2f}.png" for temperature in temperatures]
    check_new_outputs(paths, args.overwrite)
    output.mkdir(parents=True, exist_ok=True)
    context = None
    if run.num_classes is not None:
        classes = [args.label] if args.label is not None else list(range(run.num_classes))
        context = torch.tensor(
            [classes[i % len(classes)] for i in range(args.num)], device=args.device
        )
    for temperature, path in zip(temperatures, paths):
        with atomic_output(path) as temporary:
            nonfinite = write_sample_grid(
                run.model,
                temporary,
                num=args.num,
                temperature=temperature,
                context=context,
                seed=args.seed,
            )
        if nonfinite:
            print(
                f"flowkit: warning: {nonfinite} non-finite sample values at temperature "
                f"{temperature} (the inverse overflowed); drawn mid-grey",
                file=sys.stderr,
            )
        print(path)
    return 0


def _parse_context(items: Sequence[str] | None, run: Run) -> list[float] | None:
    """The context values named by ``--context NAME=VALUE ...``, in the model's column order."""
    names = run.context_columns
    if not names:
        if items:
            raise UsageError(f"--context: the model in {run.checkpoint} has no context columns")
        return None
    listed = " ".join(f"{name}=VALUE" for name in names)
    if not items:
        raise UsageError(
            f"the model in {run.checkpoint} is conditional; give every context column once: "
            f"--context {listed}"
        )
    values: dict[str, float] = {}
    for item in items:
        name, separator, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not separator or not math.isfinite(value):
            raise UsageError(f"--context expects NAME=NUMBER (finite), got {item!r}")
        if name not in names:
            raise UsageError(
                f"--context: {name!r} is not a context column; the columns are {', '.join(names)}"
            )
        if name in values:
            raise UsageError(f"--context names {name!r} twice; give each column once")
        values[name] = value
    missing = [name for name in names if name not in values]
    if missing:
        raise UsageError(
            f"--context misses {', '.join(missing)}; give every context column once: "
            f"--context {listed}"
        )
    return [values[name] for name in names]


def _check_context_range(values: list[float], run: Run) -> None:
    """A UsageError naming the --context value the model's precision overflows on."""
    import torch

    statistics = run.data.get("standardization") or {}
    mean = statistics.get("context_mean") or [0.0] * len(values)
    std = statistics.get("context_std") or [1.0] * len(values)
    dtype = next(run.flow.parameters(), torch.zeros(())).dtype
    found = first_overflow([values], mean, std, dtype)
    if found is not None:
        _, column, value, standardised = found
        raise UsageError(
            f"--context {run.context_columns[column]}={value:g} is "
            f"{overflow_message(standardised, dtype)}; give a value in the range of the training "
            "data"
        )


def _sample_rows(args: argparse.Namespace, run: Run) -> int:
    import numpy as np
    import torch

    from flowkit.data.tables import write_table

    if args.label is not None:
        raise UsageError(
            "--label is for class-conditional image models; a table model takes --context"
        )
    temperatures = args.temperatures or [1.0]
    if len(temperatures) != 1:
        raise UsageError(
            f"--temperatures: a table model samples at one temperature, got {len(temperatures)}"
        )
    output = Path(args.output) if args.output else run.directory / "samples" / "samples.csv"
    if output.suffix != ".csv":
        raise UsageError(f"--output expects a .csv file for a table model's samples, got {output}")
    context_values = _parse_context(args.context, run)
    if context_values is not None:
        _check_context_range(context_values, run)
    check_new_outputs([output], args.overwrite)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if context_values is None:
            rows = run.flow.sample(args.num, temperature=temperatures[0])
            context = None
        else:
            context = torch.tensor([context_values] * args.num, device=args.device)
            rows = run.flow.sample(None, context=context, temperature=temperatures[0])
    rows = rows.double().cpu().numpy()
    bad = int((~np.isfinite(rows)).any(axis=1).sum())
    if bad:
        print(
            f"flowkit: warning: {bad} of {args.num} sampled rows have non-finite values",
            file=sys.stderr,
        )
    columns = run.columns or [f"x{index}" for index in range(rows.shape[1])]
    if context is not None:
        # The context columns repeat the values as given, not as the model's precision rounds them.
        given = np.tile(np.asarray(context_values, dtype=np.float64), (rows.shape[0], 1))
        rows = np.concatenate([rows, given], axis=1)
        columns = columns + run.context_columns
    with atomic_output(output) as temporary:
        write_table(temporary, rows, columns)
    print(output)
    return 0


def _model_inputs(run: Run, images: Any, device: str) -> Any:
    # The centre of each pixel's bin: the same encoding every time, no dequantisation noise.
    model = run.model
    return model.bin_centres(model.levels(images)).to(device)


def _pixels(run: Run, values: Any) -> Any:
    """The model's continuous values as 8-bit pixels of its bins."""
    import torch

    values = values.float().cpu()
    nan = torch.isnan(values)
    if bool(nan.any()):
        raise CommandError(
            f"the model's decoded images hold {int(nan.sum())} NaN value(s) of {values.numel()} "
            f"(a diverged model?); try --weights raw or an earlier checkpoint of {run.checkpoint}"
        )
    model = run.model
    return model.to_uint8(model.quantize(values))


def interpolate_command(args: argparse.Namespace) -> int:
    """Decode the line between the latents of two images, one row per pair."""
    import torch

    from flowkit.data import save_image_grid
    from flowkit.latent import interpolate

    check_common(args)
    if args.steps < 2:
        raise UsageError(f"--steps expects an integer >= 2 (both ends are drawn), got {args.steps}")
    if len(args.first) != len(args.second):
        raise UsageError(
            f"--first and --second expect the same number of indices (one row per pair), got "
            f"{len(args.first)} and {len(args.second)}"
        )
    run = open_run(args)
    require_images(run, "interpolate")
    path = Path(args.output) if args.output else run.directory / "samples" / "interpolation.png"
    check_new_outputs([path], args.overwrite)
    data = run_images(run, args.data, args.split)
    check_indices("--first", args.first, data)
    check_indices("--second", args.second, data)
    if run.flow.context_shape is not None and data.labels is None:
        raise UsageError(f"the model is class-conditional but {data.source} has no labels")
    rows = []
    for a, b in zip(args.first, args.second):
        images = _model_inputs(run, data.images[[a, b]], args.device)
        labels = None if run.flow.context_shape is None else data.labels[a].to(args.device)
        rows.append(
            interpolate(run.continuous_flow, images[0], images[1], args.steps, context=labels)
        )
    with atomic_output(path) as temporary:
        grid = _pixels(run, torch.cat(rows))
        save_image_grid(grid, temporary, nrow=args.steps)
    print(path)
    return 0


def manipulate_command(args: argparse.Namespace) -> int:
    """Move images along the direction between the mean latents with and without a label."""
    import torch

    from flowkit.data import save_image_grid
    from flowkit.latent import attribute_direction, manipulate

    check_common(args)
    if args.steps < 2:
        raise UsageError(f"--steps expects an integer >= 2, got {args.steps}")
    check_positive("--num-reference", args.num_reference)
    if not math.isfinite(args.scale):
        raise UsageError(f"--scale expects a finite number, got {args.scale}")
    run = open_run(args)
    require_images(run, "manipulate")
    path = Path(args.output) if args.output else run.directory / "samples" / "manipulation.png"
    check_new_outputs([path], args.overwrite)
    data = run_images(run, args.data, args.split)
    if data.labels is None:
        raise UsageError(
            f"manipulate needs labelled data (class labels serve as attributes); {data.source} "
            "has no labels"
        )
    check_indices("--indices", args.indices, data)
    count = min(args.num_reference, data.images.shape[0])
    labels = data.labels[:count]
    present = sorted(int(label) for label in torch.unique(labels))
    if args.attribute not in present:
        raise UsageError(
            f"--attribute {args.attribute} is not among the labels of the first {count} "
            f"images of {data.source}: {present}"
        )
    images = _model_inputs(run, data.images[:count], args.device)
    context = None if run.flow.context_shape is None else labels.to(args.device)
    direction = attribute_direction(
        run.continuous_flow, images, labels == args.attribute, context=context
    )
    scales = torch.linspace(-args.scale, args.scale, args.steps).tolist()
    rows = []
    for index in args.indices:
        image = _model_inputs(run, data.images[index : index + 1], args.device)[0]
        label = None if context is None else data.labels[index].to(args.device)
        rows.append(manipulate(run.continuous_flow, image, direction, scales, context=label))
    with atomic_output(path) as temporary:
        grid = _pixels(run, torch.cat(rows))
        save_image_grid(grid, temporary, nrow=args.steps)
    print(path)
    return 0


def presets_command(args: argparse.Namespace) -> int:
    """List the named run presets and their sources."""
    from flowkit.presets.runs import RUN_PRESETS, augmentation_of

    for name, preset in sorted(RUN_PRESETS.items()):
        print(
            f"{name:18s} {preset.description}\n{'':18s} source: {preset.source}\n"
            f"{'':18s} augmentation: {augmentation_of(preset)}"
        )
    return 0
