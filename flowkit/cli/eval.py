"""``flowkit eval``: the negative log-likelihood of a trained model on a dataset."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from flowkit.cli._common import CommandError, UsageError, check_positive, check_table_range
from flowkit.cli._parser import (
    HelpFormatter,
    add_checkpoint_options,
    add_data_options,
    add_global_options,
)
from flowkit.cli._runs import Run, check_common, open_run, run_images

__all__ = ["add_parser", "eval_command"]


def add_parser(commands: Any) -> None:
    """Add ``flowkit eval`` to the commands of the top-level parser."""
    evaluate = commands.add_parser(
        "eval",
        formatter_class=HelpFormatter,
        help="negative log-likelihood (and bits/dim) of a trained model on a dataset",
        description="Evaluate the mean negative log-likelihood, and bits per dimension for "
        "images, with fixed dequantisation noise; the result does not depend on the batch size.",
    )
    add_global_options(evaluate, top=False)
    add_checkpoint_options(evaluate)
    add_data_options(evaluate, ("train", "validation", "test"))
    evaluate.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    evaluate.add_argument(
        "--num-test", type=int, help="evaluate only the first N examples (default: all)"
    )
    evaluate.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="K",
        help="images: the importance-weighted bound over K dequantisation draws (tighter as K "
        "grows; default: 1, the training objective)",
    )
    evaluate.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="arithmetic precision"
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    evaluate.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="tables: score the run's recorded rows even though its data file changed since "
        "training (by default a changed file is refused)",
    )
    evaluate.set_defaults(handler=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint: mean negative log-likelihood, and bits/dim for images."""
    import torch

    from flowkit.train.distributed import Process

    check_common(args)
    check_positive("--batch-size", args.batch_size)
    check_positive("--num-test", args.num_test)
    check_positive("--samples", args.samples)
    run = open_run(args)
    if not run.is_table and args.split == "validation":
        raise UsageError("--split validation is for table runs (their validation rows)")
    if run.is_table and args.samples != 1:
        raise UsageError(
            "--samples applies to image models (dequantisation draws); this is a table"
        )
    data, source, split, dims = _eval_data(args, run)
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
    result = _result(args, run, value, source, dims, split, len(data))
    if args.json:
        print(json.dumps(result))
    else:
        print(_describe(result, run.is_table, args.samples))
    return 0


def _eval_data(args: argparse.Namespace, run: Run) -> tuple[Any, Any, str, int | None]:
    """The examples to score, their source, the split's name and, for images, values per image."""
    import torch

    from flowkit.train.data import as_training_data

    if not run.is_table:
        images = run_images(run, args.data, args.split)
        dims = math.prod(images.images.shape[1:])
        return as_training_data(images, args.num_test), images.source, args.split, dims
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
    return as_training_data(examples, limit=args.num_test), table.source, rows_of, None


def _result(
    args: argparse.Namespace,
    run: Run,
    value: float,
    source: Any,
    dims: int | None,
    split: str,
    examples: int,
) -> dict[str, Any]:
    """What an evaluation prints as JSON; a non-finite log-likelihood is an error."""
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "data": str(source)}
    if dims is None:
        result["nll"] = value
    else:
        result["nll"] = value * dims * math.log(2)
        result["bits_per_dim"] = value
    if not math.isfinite(result["nll"]):
        raise CommandError(
            f"the model in {run.checkpoint} gives a non-finite log-likelihood ({result['nll']}) "
            f"on {examples} examples of {source}; try --weights raw or an earlier checkpoint"
        )
    result.update(split=split, examples=examples, dtype=args.dtype, weights=args.weights)
    if not run.is_table:
        result["samples"] = args.samples
    return result


def _describe(result: dict[str, Any], is_table: bool, samples: int) -> str:
    """An evaluation's result in one line."""
    if is_table:
        rows = "rows" if result["split"] == "all" else f"{result['split']} rows"
        return (
            f"{result['nll']:.4f} nats per example on {result['examples']} {rows} of "
            f"{result['data']}"
        )
    bound = "" if samples == 1 else f", importance-weighted over {samples} draws"
    return (
        f"{result['bits_per_dim']:.4f} bits/dim ({result['nll']:.2f} nats per image{bound}) on "
        f"{result['examples']} {result['split']} images of {result['data']}"
    )


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
