"""``flowkit sample``: image grids or table rows drawn from a trained model."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    UsageError,
    atomic_output,
    check_new_outputs,
    check_positive,
    check_temperatures,
    first_overflow,
    overflow_message,
)
from flowkit.cli._parser import (
    HelpFormatter,
    add_checkpoint_options,
    add_global_options,
    add_overwrite_option,
)
from flowkit.cli._runs import Run, check_common, open_run

__all__ = ["add_parser", "sample_command"]


# Temperatures of the image grids 'flowkit sample' draws by default.
IMAGE_TEMPERATURES = (0.0, 0.5, 0.7, 1.0)


# The guidance options of 'flowkit sample' and their defaults (no guidance).
GUIDANCE_DEFAULTS = {
    "guidance": 0.0,
    "annealed_guidance": False,
    "guide_what": "ab",
    "attention_temperature": 1.0,
}


def add_parser(commands: Any) -> None:
    """Add ``flowkit sample`` to the commands of the top-level parser."""
    sample = commands.add_parser(
        "sample",
        formatter_class=HelpFormatter,
        help="sample image grids or table rows",
        description="Sample from a trained model: image grids, one PNG per temperature, or rows "
        "of a table (with the column names) as CSV.",
    )
    add_global_options(sample, top=False)
    add_checkpoint_options(sample)
    sample.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        help="standard deviations of the base noise (Glow's eps_std); images: several (default: "
        "0 0.5 0.7 1); tables: one (default: 1)",
    )
    sample.add_argument("--num", type=int, default=64, help="images per grid or rows of a table")
    sample.add_argument(
        "--label",
        type=int,
        help="class-conditional models: sample this class only (default: every class in turn)",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed")
    _add_guidance_options(sample)
    sample.add_argument(
        "--context",
        nargs="+",
        metavar="NAME=VALUE",
        help="conditional table models: the value of every context column, each once "
        "(default: none; required by a conditional model)",
    )
    sample.add_argument(
        "--output",
        help="images: a directory for the grids (default: samples/ in the run directory); "
        "tables: a .csv file (default: samples/samples.csv in the run directory)",
    )
    add_overwrite_option(sample)
    sample.set_defaults(handler=sample_command)


def _add_guidance_options(sample: argparse.ArgumentParser) -> None:
    """TarFlow's classifier-free guidance options (defaults in GUIDANCE_DEFAULTS)."""
    sample.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        metavar="W",
        help="TarFlow: classifier-free guidance weight w >= 0; each decoding step uses "
        "theta_c + w (theta_c - theta_u) (default: 0, no guidance)",
    )
    sample.add_argument(
        "--annealed-guidance",
        action="store_true",
        help="TarFlow: ramp the guidance weight from 0 to w over each block's positions, as the "
        "official evaluation does (default: off, w at every position)",
    )
    sample.add_argument(
        "--guide-what",
        choices=("ab", "a", "b"),
        default="ab",
        help="TarFlow: what guidance acts on: ab both parameters, a the log-scales, b the shifts "
        "(default: ab)",
    )
    sample.add_argument(
        "--attention-temperature",
        type=float,
        default=1.0,
        metavar="TAU",
        help="TarFlow: attention temperature of guidance's unconditional pass; with --guidance "
        "it guides a model without classes against its tempered attention (default: 1)",
    )


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
