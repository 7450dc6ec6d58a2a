"""``flowkit interpolate`` and ``flowkit manipulate``: walks in the latent space of images."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    CommandError,
    UsageError,
    atomic_output,
    check_new_outputs,
    check_positive,
)
from flowkit.cli._parser import (
    HelpFormatter,
    add_checkpoint_options,
    add_data_options,
    add_global_options,
    add_overwrite_option,
)
from flowkit.cli._runs import Run, check_common, open_run, require_images, run_images

__all__ = ["add_parsers", "interpolate_command", "manipulate_command"]


def add_parsers(commands: Any) -> None:
    """Add ``flowkit interpolate`` and ``flowkit manipulate`` to the top-level parser's commands."""
    interp = commands.add_parser(
        "interpolate",
        formatter_class=HelpFormatter,
        help="walk between two images in latent space",
        description="Decode points on the line between the latents of two dataset images; one "
        "row per pair.",
    )
    add_global_options(interp, top=False)
    add_checkpoint_options(interp)
    add_data_options(interp)
    interp.add_argument(
        "--first", type=int, nargs="+", default=[0], help="indices of the first images"
    )
    interp.add_argument(
        "--second", type=int, nargs="+", default=[1], help="indices of the second images"
    )
    interp.add_argument("--steps", type=int, default=8, help="points per row, ends included")
    interp.add_argument(
        "--output", help="output PNG (default: samples/interpolation.png in the run directory)"
    )
    add_overwrite_option(interp)
    interp.set_defaults(handler=interpolate_command)

    manip = commands.add_parser(
        "manipulate",
        formatter_class=HelpFormatter,
        help="move images along an attribute direction",
        description="Compute the attribute direction as the mean latent of images with the label "
        "minus the mean latent of the others (Glow section 6; class labels serve as attributes) "
        "and move images along it.",
    )
    add_global_options(manip, top=False)
    add_checkpoint_options(manip)
    add_data_options(manip)
    manip.add_argument(
        "--attribute",
        type=int,
        required=True,
        help="label value that marks the attribute (required)",
    )
    manip.add_argument(
        "--indices", type=int, nargs="+", default=[0], help="images to move (one row each)"
    )
    manip.add_argument("--scale", type=float, default=1.0, help="largest step along the direction")
    manip.add_argument("--steps", type=int, default=5, help="points per row from -scale to +scale")
    manip.add_argument(
        "--num-reference", type=int, default=2000, help="images used to compute the direction"
    )
    manip.add_argument(
        "--output", help="output PNG (default: samples/manipulation.png in the run directory)"
    )
    add_overwrite_option(manip)
    manip.set_defaults(handler=manipulate_command)


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


def check_indices(flag: str, indices: Sequence[int], data: Any) -> None:
    count = data.images.shape[0]
    for index in indices:
        if not 0 <= index < count:
            raise UsageError(
                f"{flag} expects indices in [0, {count}) ({data.source} has {count} images), "
                f"got {index}"
            )
