"""Reading a trained run back (any preset), and ``flowkit eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    CommandError,
    UsageError,
    check_device,
    check_path,
    check_positive,
    check_table_range,
    prepare_allocator,
)

__all__: list[str] = []


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model and what its checkpoint says about its data."""

    checkpoint: Path
    flow: Any
    model_name: str | None
    data: dict[str, Any]
    train_config: dict[str, Any]
    num_classes: int | None

    @property
    def directory(self) -> Path:
        return self.checkpoint.parent

    @property
    def continuous_flow(self) -> Any:
        """The flow over continuous values (a Dequantized model's inner flow)."""
        from flowkit.distributions import Dequantized

        return self.flow.flow if isinstance(self.flow, Dequantized) else self.flow

    @property
    def is_table(self) -> bool:
        return self.data.get("kind") == "vector"

    @property
    def model(self) -> Any:
        """The image model: a Dequantized, which owns the bits, the noise and bits/dim.

        A flow trained under uniform dequantisation comes back as its flow alone; the run's
        record gives its bits (earlier runs kept them as a train setting).
        """
        from flowkit.distributions import Dequantized

        if isinstance(self.flow, Dequantized):
            return self.flow
        # The run's data record, or an earlier run's train settings, which held the bits.
        return Dequantized.from_record(self.flow, {**self.train_config, **self.data})

    @property
    def columns(self) -> list[str]:
        return list(self.data.get("columns") or [])

    @property
    def context_columns(self) -> list[str]:
        return list(self.data.get("context_columns") or [])


def open_run(args: argparse.Namespace) -> Run:
    from flowkit.loading import load_flow

    check_device(args.device)
    prepare_allocator()
    flow, state = load_flow(args.checkpoint, weights=args.weights, map_location=args.device)
    data = dict(state.get("data") or {"kind": "image"})
    model_config = state.get("model_config") or {}
    num_classes = data.get("num_classes", model_config.get("num_classes"))
    return Run(
        checkpoint=Path(args.checkpoint),
        flow=flow,
        model_name=state.get("model_name"),
        data=data,
        train_config=dict(state.get("train_config") or {}),
        num_classes=num_classes,
    )


def require_images(run: Run, command: str) -> None:
    if run.is_table:
        raise UsageError(
            f"{command} works on image models; {run.checkpoint} holds a table model "
            f"({run.model_name})"
        )


def run_images(run: Run, data: str | None, split: str) -> Any:
    """The images named by ``--data``/``--split`` (default: the run's own data), padded.

    On the run's own data the run's record picks exactly the images it used: its test split, the
    same seeded share of its training images held out, or its separate test set (all of it, or
    that set's test split, as in training). Other data is read at ``split``; asked for its test
    split, data without one counts whole.
    """
    import torch.nn.functional as F

    from flowkit.data import load_dataset
    from flowkit.data.loading import has_test_split, same_source

    source = run.data.get("source") or run.train_config["data"]
    if data is None or same_source(data, source):
        images = _own_images(run, source, split)
    elif split == "test" and not has_test_split(data):
        images = load_dataset(data, split="train")
    else:
        images = load_dataset(data, split=split)
    pad = int(run.train_config.get("pad") or 0)
    if pad:
        images = dataclasses.replace(images, images=F.pad(images.images, (pad,) * 4).contiguous())
    return images


def _own_images(run: Run, source: str, split: str) -> Any:
    """The training or test images of the run, as its record says it split them."""
    from flowkit.data import load_dataset
    from flowkit.data.base import split_images
    from flowkit.data.loading import has_test_split

    fraction = run.data.get("test_fraction")
    if fraction is not None:
        seed = int(run.data.get("split_seed") or 0)
        train, test = split_images(load_dataset(source, split="train"), float(fraction), seed)
        return test if split == "test" else train
    test_source = run.data.get("test_source")
    if split == "test" and test_source:
        # Runs recorded before "test_split" existed used a test source's test split if it had one.
        which = run.data.get("test_split") or ("test" if has_test_split(test_source) else "all")
        return load_dataset(test_source, split="test" if which == "test" else "train")
    return load_dataset(source, split=split)


def _run_table(run: Run, data: str | None, split: str, allow_changed: bool = False) -> Any:
    """The rows to score and which they are (``split``, or ``"all"`` for other data).

    ``--data`` naming another file scores all its rows. On the run's own data the rows are
    exactly those the run recorded for ``split`` (row indices of the file), provided the file is
    the one the run read (its SHA-256); a changed file is refused unless ``allow_changed``. Runs
    recorded before the split was stored are split again from their seed.
    """
    from flowkit.data.tables import file_digest, read_table, split_table

    def read(path: str) -> Any:
        return read_table(
            path, columns=run.columns or None, context_columns=run.context_columns or None
        )

    source, test_source = run.data.get("source"), run.data.get("test_source")
    if data is not None and not _same_file(data, source):
        if test_source is None or split != "test" or not _same_file(data, test_source):
            return read(data), "all"
    recorded = run.data.get("split")
    if split == "validation" and (not recorded or recorded.get("validation") is None):
        raise UsageError(f"the run of {run.checkpoint} has no validation split")
    if split == "test" and test_source:
        _check_digest(run, test_source, run.data.get("test_sha256"), allow_changed, file_digest)
        return read(test_source), "test"
    if source is None:
        raise UsageError(
            f"{run.checkpoint} does not record where its data came from; give it with --data TABLE"
        )
    if recorded:
        _check_digest(run, source, run.data.get("sha256"), allow_changed, file_digest)
        table = read(source)
        rows = [int(row) for row in recorded[split].tolist()]
        if rows and max(rows) >= len(table):
            raise CommandError(
                f"{source} has {len(table)} rows, but the run's {split} rows go up to row "
                f"{max(rows)}; give the file the run was trained on"
            )
        return table.take(rows), split
    fraction = run.data.get("test_fraction")
    if fraction is None:
        return read(source), split
    train, test = split_table(read(source), fraction, int(run.data.get("split_seed") or 0))
    return (test if split == "test" else train), split


def _same_file(path: str, other: str | None) -> bool:
    return other is not None and Path(path).resolve() == Path(other).resolve()


def _check_digest(
    run: Run, path: str, expected: str | None, allow_changed: bool, digest: Any
) -> None:
    """A one-line refusal when the run's data file changed since training."""
    if expected is None or allow_changed:
        return
    if not Path(path).is_file():
        raise CommandError(f"{path}, the data of {run.checkpoint}, is gone; give data with --data")
    if digest(path) != expected:
        raise UsageError(
            f"{path} changed since {run.checkpoint} was trained (its SHA-256 differs), so the "
            "run's recorded rows may not be the rows it split; restore the file, or pass "
            "--allow-changed-data to score the recorded row numbers anyway"
        )


def check_indices(flag: str, indices: Sequence[int], data: Any) -> None:
    count = data.images.shape[0]
    for index in indices:
        if not 0 <= index < count:
            raise UsageError(
                f"{flag} expects indices in [0, {count}) ({data.source} has {count} images), "
                f"got {index}"
            )


def check_common(args: argparse.Namespace) -> None:
    check_path("checkpoint", args.checkpoint)
    for flag in ("--data", "--output"):
        check_path(flag, getattr(args, flag[2:], None))


def eval_command(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint: mean negative log-likelihood, and bits/dim for images."""
    import torch

    from flowkit.train.data import as_training_data
    from flowkit.train.distributed import Process

    check_common(args)
    check_positive("--batch-size", args.batch_size)
    check_positive("--num-test", args.num_test)
    check_positive("--samples", args.samples)
    run = open_run(args)
    rows_of = args.split
    if not run.is_table and args.split == "validation":
        raise UsageError("--split validation is for table runs (their validation rows)")
    if run.is_table and args.samples != 1:
        raise UsageError(
            "--samples applies to image models (dequantisation draws); this is a table"
        )
    if run.is_table:
        table, rows_of = _run_table(
            run, args.data, args.split, getattr(args, "allow_changed_data", False)
        )
        if run.data.get("standardization"):
            dtype = torch.float64 if args.dtype == "float64" else torch.float32
            check_table_range(table, run.data["standardization"], dtype)
        # float64: a standardised model scales the rows in float64 before its own precision.
        examples: Any = table.values
        if table.context is not None:
            examples = (table.values, table.context)
        data = as_training_data(examples, limit=args.num_test)
        source = table.source
    else:
        images = run_images(run, args.data, args.split)
        data = as_training_data(images, args.num_test)
        source = images.source
    scored = run.flow if run.is_table else run.model
    data.check_against(scored, args.split)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    flow = scored.to(dtype)
    process = Process(device=torch.device(args.device))
    with torch.no_grad():
        if run.is_table:
            value = data.evaluate(flow, args.batch_size, process, dtype=dtype)
        else:
            value = data.evaluate(
                flow, args.batch_size, process, dtype=dtype, num_samples=args.samples
            )
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "data": str(source)}
    if run.is_table:
        result["nll"] = value
    else:
        dims = math.prod(images.images.shape[1:])
        result["nll"] = value * dims * math.log(2)
        result["bits_per_dim"] = value
    if not math.isfinite(result["nll"]):
        raise CommandError(
            f"the model in {run.checkpoint} gives a non-finite log-likelihood ({result['nll']}) "
            f"on {len(data)} examples of {source}; try --weights raw or an earlier checkpoint"
        )
    result.update(
        split=rows_of if run.is_table else args.split,
        examples=len(data),
        dtype=args.dtype,
        weights=args.weights,
    )
    if not run.is_table:
        result["samples"] = args.samples
    if args.json:
        print(json.dumps(result))
    elif run.is_table:
        rows = "rows" if rows_of == "all" else f"{rows_of} rows"
        print(f"{result['nll']:.4f} nats per example on {len(data)} {rows} of {source}")
    else:
        bound = "" if args.samples == 1 else f", importance-weighted over {args.samples} draws"
        print(
            f"{value:.4f} bits/dim ({result['nll']:.2f} nats per image{bound}) on {len(data)} "
            f"{args.split} images of {source}"
        )
    return 0
