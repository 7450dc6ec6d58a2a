"""``flowkit train``: images or a table into a run directory; its parser and its handler."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    UsageError,
    check_path,
    check_table_range,
    prepare_allocator,
)
from flowkit.cli._parser import HelpFormatter, add_global_options
from flowkit.cli._settings import (
    Settings,
    build_image_model,
    check_settings,
    fill,
    model_config_of,
    model_entry,
    model_settings,
    read_settings,
)

__all__ = ["add_parser", "train_command"]


# ``flowkit train`` options whose value, when not given, comes from the preset (or config file)
# and else from TrainConfig's field of the same name.
_TRAIN_FIELDS = frozenset(
    {
        "data",
        "output",
        "epochs",
        "max_steps",
        "max_minutes",
        "batch_size",
        "lr",
        "optimizer",
        "beta2",
        "weight_decay",
        "warmup_steps",
        "lr_decay",
        "min_lr_ratio",
        "augment_shift",
        "device",
        "seed",
        "val_fraction",
        "patience",
        "precision",
        "grad_accumulation",
    }
)


class _TrainHelpFormatter(HelpFormatter):
    """Options left out take the preset's value, else TrainConfig's default: the help says which."""

    def _help_without_default(self, action: argparse.Action, text: str) -> str:
        if action.dest not in _TRAIN_FIELDS:
            return text
        return f"{text} (default: from the preset or --config, else {_train_default(action)})"


def _train_default(action: argparse.Action) -> str:
    # Imported only to show help: flowkit.train brings in torch, a second at start-up.
    from flowkit.train.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    if action.dest not in fields:
        return "unset"
    value = fields[action.dest].default
    return "none" if value is None else str(value).replace("%", "%%")


_SET_HELP = (
    "override one setting, as section.name=value with section 'model' (the preset's model "
    "config) or 'train' (TrainConfig); the value is read as JSON when it parses (numbers, "
    "true/false, null, lists), else as a string; a single number is accepted where a list is "
    "expected. Repeatable. Example: --set model.K=8 --set train.lr=0.0005 (default: no "
    "overrides)"
)


def add_parser(commands: Any) -> None:
    """Add ``flowkit train`` to the commands of the top-level parser."""
    train = commands.add_parser(
        "train",
        formatter_class=_TrainHelpFormatter,
        help="train a model",
        description="Train a model. Settings come from --preset, then --config, then the options "
        "below, then --set overrides. Run under torchrun for several processes (DDP). Writes "
        "config.json, checkpoint.pt, metrics.jsonl, a learning curve and samples to the output "
        "directory.",
    )
    add_global_options(train, top=False)
    _add_source_options(train)
    _add_data_options(train)
    _add_length_options(train)
    _add_optimizer_options(train)
    _add_compute_options(train)
    _add_image_options(train)
    _add_model_options(train)
    _add_run_options(train)
    train.set_defaults(handler=train_command)


def _add_source_options(train: argparse.ArgumentParser) -> None:
    """Options naming where the settings come from: a preset, a config file."""
    train.add_argument(
        "--preset",
        help="named run (see 'flowkit presets'), e.g. glow-small, glow-cifar10 or, for a table, "
        "nsf (default: the config file's preset, else none: a Glow with the defaults of "
        "GlowConfig and TrainConfig)",
    )
    train.add_argument(
        "--config",
        help="JSON (or TOML on Python 3.11+) file with 'preset', 'model' and 'train' sections, "
        "e.g. a run's own config.json, which repeats the run from any directory (default: none)",
    )


def _add_data_options(train: argparse.ArgumentParser) -> None:
    """Options choosing the training data, its test set and, for tables, validation and columns."""
    train.add_argument(
        "--data",
        help="dataset: fashion-mnist-small (bundled) or a path. Images: a CIFAR-10/100 python "
        "folder or its .tar.gz, a folder of MNIST-style idx files (gzipped or not), a folder of "
        "downsampled ImageNet .npz batches, an image folder or tar (with train/ and test/ "
        "folders, or whole). Tables, for the table presets (nsf, maf, realnvp-tabular, naf, "
        "umnn, resflow, ncsf, cnf): a .csv file with a header row, a .npy array or a .npz archive",
    )
    train.add_argument(
        "--test-data",
        help="test set: a table with the columns of --data, or images (a folder or tar without "
        "split folders counts whole) (default: the test split of --data)",
    )
    train.add_argument(
        "--test-fraction",
        type=float,
        help="hold out this fraction of --data (seeded by --seed) as the test set when there "
        "is no --test-data (default: none)",
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="tables: hold out this fraction of the training rows (seeded by --seed) as a "
        "validation set, evaluated every epoch; the best validation weights are kept and used by "
        "eval, sample and flowkit.load; 0 for none",
    )
    train.add_argument(
        "--patience",
        type=int,
        metavar="EPOCHS",
        help="tables: stop when this many epochs pass without a better validation NLL (early "
        "stopping; needs --val-fraction > 0)",
    )
    train.add_argument(
        "--columns",
        nargs="+",
        metavar="NAME",
        help="tables: the data columns (default: every column not named by --context-columns)",
    )
    train.add_argument(
        "--context-columns",
        nargs="+",
        metavar="NAME",
        help="tables: columns the flow is conditioned on (a conditional density of the others; "
        "default: none)",
    )


def _add_length_options(train: argparse.ArgumentParser) -> None:
    """Options for the output directory, the run's length and the batch size."""
    train.add_argument("--output", help="output directory")
    train.add_argument("--epochs", type=int, help="number of epochs")
    train.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    train.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this many minutes of wall-clock time (a checkpoint is written)",
    )
    train.add_argument("--batch-size", type=int, help="global batch size (split over processes)")


def _add_optimizer_options(train: argparse.ArgumentParser) -> None:
    """Options for the optimizer and its learning-rate schedule."""
    train.add_argument("--lr", type=float, help="base learning rate")
    train.add_argument(
        "--optimizer",
        metavar="NAME",
        help="adamax, adam or adamw (adam with decoupled weight decay)",
    )
    train.add_argument(
        "--beta2",
        type=float,
        metavar="B",
        help="second-moment decay of the optimizer (none: 1 - 1/(steps per epoch x "
        "polyak_epochs), as Glow's official code)",
    )
    train.add_argument(
        "--weight-decay",
        type=float,
        metavar="W",
        help="decoupled weight decay, with --optimizer adamw only",
    )
    train.add_argument(
        "--warmup-steps",
        type=int,
        metavar="N",
        help="linear learning-rate warm-up over this many steps, instead of the preset's "
        "warm-up in epochs (train.warmup_epochs)",
    )
    train.add_argument(
        "--lr-decay",
        metavar="KIND",
        help="learning rate after the warm-up: constant, or cosine or linear decay to "
        "--min-lr-ratio x --lr at the run's last step (--max-steps or --epochs)",
    )
    train.add_argument(
        "--min-lr-ratio",
        type=float,
        metavar="R",
        help="the decay's floor as a fraction of --lr",
    )


def _add_compute_options(train: argparse.ArgumentParser) -> None:
    """Options for how the step is computed: precision, micro-batches, compilation."""
    train.add_argument(
        "--precision",
        metavar="DTYPE",
        help="float32, bfloat16 or float16 (with loss scaling): the dtype the model's networks "
        "compute in under autocast; weights, log-densities and the loss stay float32",
    )
    train.add_argument(
        "--grad-accumulation",
        type=int,
        metavar="N",
        help="split each batch into N micro-batches (same update, 1/N of the activation memory)",
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="run the training step through torch.compile (slow first steps)",
    )


def _add_image_options(train: argparse.ArgumentParser) -> None:
    """Options for images: bits per value and training augmentation."""
    train.add_argument(
        "--n-bits",
        type=int,
        help="bits per pixel of the image model, kept from the data (e.g. 5; default: the "
        "preset's or --config's, else 8)",
    )
    augment = train.add_mutually_exclusive_group()
    augment.add_argument(
        "--augment-shift",
        type=float,
        metavar="FRACTION",
        help="random shifts of training images by up to this fraction of their size (official "
        "CIFAR-10/MNIST runs: 0.1; see 'flowkit presets')",
    )
    augment.add_argument(
        "--no-augment",
        action="store_true",
        help="turn off the preset's training augmentation (shifts, flips, noise) (default: the "
        "preset's augmentation)",
    )
    train.add_argument(
        "--augment-flip",
        action="store_true",
        help="also mirror training images at random (default: from the preset, else off)",
    )


def _add_model_options(train: argparse.ArgumentParser) -> None:
    """Options changing the model: class conditioning, invertible backpropagation."""
    train.add_argument(
        "--num-classes",
        type=int,
        help="train a class-conditional model with this many classes (default: from the preset, "
        "else unconditional)",
    )
    train.add_argument(
        "--memory-saving",
        action="store_true",
        help="invertible backpropagation: memory flat in depth K (default: from the preset, else "
        "off)",
    )


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """Options for the device, seed, run directory, logging and --set overrides."""
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N (auto: the GPU if any)")
    train.add_argument("--seed", type=int, help="seed of data order, noise and initialisation")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from OUTPUT/checkpoint.pt (a fresh start in an empty directory)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in the output directory and start afresh",
    )
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as JSON and exit without training",
    )
    train.add_argument(
        "--tensorboard", action="store_true", help="also write TensorBoard logs (needs tensorboard)"
    )
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar and the per-epoch lines (default: shown)",
    )
    train.add_argument("--set", action="append", metavar="SECTION.NAME=VALUE", help=_SET_HELP)


def _check_train_args(args: argparse.Namespace) -> None:
    """What only the command line says; every setting is checked after merging (check_settings)."""
    check_path("--config", args.config)
    if args.resume and args.overwrite:
        raise UsageError(
            "--resume continues the run in the output directory and --overwrite replaces it; "
            "give one of them"
        )


def train_command(args: argparse.Namespace) -> int:
    """Train a model from the merged settings; 0 when done or when only printing them."""
    import torch

    from flowkit.train import Trainer
    from flowkit.train.config import TrainConfig
    from flowkit.train.rundir import RunDirectory

    _check_train_args(args)
    prepare_allocator()
    settings = read_settings(args)
    entry = model_entry(settings.model_name)
    check_settings(settings, entry)
    train_config = fill(TrainConfig, "train", settings.train)
    if not args.print_config:
        # Refused before reading any data: a run there that is neither resumed nor replaced.
        run = RunDirectory(train_config.output, choices=("--resume", "--overwrite"))
        run.check(resume=args.resume, overwrite=args.overwrite)
    # Every model's initial weights come from --seed (presets that carry a seed of their own
    # build under it instead), so the same seed gives the same run.
    torch.manual_seed(train_config.seed)
    if entry.kind == "vector":
        prepared = _prepare_tables(args, settings, entry, train_config)
    else:
        prepared = _prepare_images(args, settings, entry, train_config)
    if prepared is None:
        return 0
    flow, model_config, train_data, test_data, data_info, *more = prepared
    options = dict(more[0]) if more else {}
    train_config = options.pop("train_config", train_config)
    inputs = {key: value for key, value in settings.inputs.items() if value is not None}
    trainer = Trainer(
        flow,
        train_config,
        train_data,
        test_data,
        **options,
        model_name=entry.name,
        model_config=model_config,
        data_info=data_info,
        run_info={"preset": settings.preset, **inputs},
    )
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if trainer.process.is_main:
        print(_summary(result))
    return 0


def _summary(result: Any) -> str:
    """The last line of a run: its length, and its test value (at the best validation step)."""
    measure = "bits/dim" if result.unit == "bits/dim" else "NLL (nats per example)"
    stopped = " (stopped early)" if result.stopped_early else ""
    best = result.best
    if best is not None:
        test = "" if best.get("test") is None else f", test {measure} {best['test']:.4f} there"
        summary = (
            f"best validation {measure} {best['validation']:.4f} at step {best['step']} (epoch "
            f"{best['epoch']}){test}; its weights are the run's default"
        )
    elif result.test_history:
        values = [value for _, value in result.test_history]
        summary = f"test {measure} {values[0]:.4f} at the start, {values[-1]:.4f} at the end"
    else:
        summary = "no test evaluation"
    return f"trained {result.steps} steps{stopped}; {summary}; outputs in {result.output}"


def _print_config(settings: Settings, model_config: Any, train_config: Any) -> None:
    inputs = {key: value for key, value in settings.inputs.items() if value is not None}
    effective = {
        "preset": settings.preset,
        "model_name": settings.model_name,
        "model": model_settings(settings, model_config),
        "train": dataclasses.asdict(train_config),
        **inputs,
    }
    print(json.dumps(effective, indent=2))


def _source(path: str) -> str:
    """A path as an absolute one (so eval finds it from anywhere); a dataset name as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _prepare_images(
    args: argparse.Namespace, settings: Settings, entry: Any, train_config: Any
) -> tuple | None:
    for flag, key in (("--columns", "columns"), ("--context-columns", "context_columns")):
        if settings.inputs[key] is not None:
            raise UsageError(f"{flag} is for tables; the {entry.name} model trains on images")
    model_config = model_config_of(settings, entry)
    if args.print_config:
        _print_config(settings, model_config, train_config)
        return None
    num_classes = getattr(model_config, "num_classes", None)
    test_path, fraction = settings.inputs["test_data"], settings.inputs["test_fraction"]
    train_data, test_data, test_split = _image_splits(
        train_config, test_path, fraction, num_classes
    )
    # Enough for eval, sample and interpolate to find exactly these images again.
    data_info = {
        "source": _source(train_config.data),
        "test_source": None if test_path is None else _source(test_path),
        "test_split": test_split,
        "test_fraction": fraction,
        "split_seed": None if fraction is None else train_config.seed,
        "train_examples": len(train_data),
        "test_examples": len(test_data),
        "num_classes": num_classes,
    }
    model = build_image_model(settings, entry, model_config)
    return model, model_config, train_data, test_data, data_info


def _image_splits(
    config: Any, test_path: str | None, fraction: float | None, num_classes: int | None
) -> tuple:
    """The training and test images, padded by ``config.pad``, and what the test set is.

    The test set is the test split of ``--data``; or ``fraction`` of its training images, held
    out with ``config.seed``, where it has no test split; or ``--test-data``: its test split when
    it has one (and always when it is ``--data`` itself), else all its images. The third value
    says which: ``"test"``, ``"held-out"`` or ``"all"``.
    """
    from flowkit.data import has_test_split, same_source
    from flowkit.train.data import load_image_splits

    data = config.data
    if test_path is not None and fraction is not None:
        raise UsageError("give --test-data or --test-fraction, not both")
    if test_path is None:
        if not has_test_split(data):
            if fraction is None:
                raise UsageError(
                    f"{data} has no test split (a test/ folder, t10k-/test- idx files, a "
                    "test_batch or val_data.npz); give test images with --test-data PATH or hold "
                    "out part of the training images with --test-fraction F (e.g. 0.1)"
                )
            test_split = "held-out"
        elif fraction is not None:
            raise UsageError(
                f"--test-fraction holds out training images where the data has no test split, "
                f"but {data} has one; leave --test-fraction out to evaluate on it"
            )
        else:
            test_split = "test"
    elif same_source(data, test_path):
        if not has_test_split(data):
            raise UsageError(
                f"--test-data {test_path} is the training data itself, which has no test "
                "split; give other test images with --test-data or hold out part of the "
                "training images with --test-fraction F"
            )
        test_split = "test"
    else:
        # A source without a test split of its own (an unsplit folder or tar, one file) is a test
        # set as a whole.
        test_split = "test" if has_test_split(test_path) else "all"
    train, test = load_image_splits(
        data,
        test_source=test_path,
        test_split=test_split,
        test_fraction=fraction,
        seed=config.seed,
        pad=config.pad,
    )
    for images, split in ((train, "training"), (test, "test")):
        if num_classes is not None and images.labels is None:
            raise UsageError(
                f"a class-conditional model needs labels, but the {split} images "
                f"({images.source}) have none"
            )
    return train, test, test_split


def _prepare_tables(
    args: argparse.Namespace, settings: Settings, entry: Any, train_config: Any
) -> tuple | None:
    """The table pipeline: float64 rows, a stored split, float64 standardisation.

    Rows are read in float64 and split into training, validation and test rows (row indices of
    the file, stored with the run with the file's digest); the standardisation is measured on the
    training rows in float64 and kept in the model, which applies it before its own precision.
    """
    inputs = settings.inputs
    train_config = _table_protocol(settings, train_config)
    split = _split_table(train_config, inputs)
    train = split.table.take(split.train_rows)
    model_config = model_config_of(
        settings,
        entry,
        features=len(train.columns),
        context_features=len(train.context_columns) or None,
    )
    if args.print_config:
        _print_config(settings, model_config, train_config)
        return None
    files = (split.table,) if inputs["test_data"] is None else (split.table, split.test)
    flow, statistics = _standardized_flow(entry, model_config, train, files)
    train_config = _batch_for(train_config, len(train))
    data_info = _table_data_info(train_config, inputs, split, train, statistics)
    options: dict[str, Any] = {"train_config": train_config}
    if split.validation_rows is not None:
        options["validation_data"] = _arrays(split.table.take(split.validation_rows))
    return flow, model_config, _arrays(train), _arrays(split.test), data_info, options


def _table_protocol(settings: Settings, train_config: Any) -> Any:
    """``train_config`` once a table run's test set and early stopping are checked.

    Without validation rows, a preset's early stopping is turned off; ``--patience`` given with
    ``--val-fraction 0`` is refused.
    """
    inputs = settings.inputs
    if inputs["test_data"] is None and inputs["test_fraction"] is None:
        raise UsageError(
            f"a table run needs a test set: give --test-data TABLE or --test-fraction F "
            f"(e.g. 0.1) to hold out part of {train_config.data}"
        )
    if inputs["test_data"] is not None and inputs["test_fraction"] is not None:
        raise UsageError("give --test-data or --test-fraction, not both")
    if train_config.val_fraction == 0 and train_config.patience is not None:
        if "patience" in settings.given:
            raise UsageError(
                f"--patience {train_config.patience} stops early on the validation NLL, but "
                "--val-fraction 0 holds out no validation rows; give --val-fraction > 0"
            )
        # Without validation rows the preset's early stopping has nothing to watch.
        train_config = dataclasses.replace(train_config, patience=None)
    return train_config


@dataclasses.dataclass(frozen=True)
class _TableSplit:
    """A table run's rows: the table of ``--data``, the test table, and row indices into the first.

    ``test`` is the held-out rows of ``table`` (``test_rows``) or, with ``--test-data``, a table
    of its own (``test_rows`` None); ``validation_rows`` is None without a validation split.
    """

    table: Any
    test: Any
    train_rows: Any
    validation_rows: Any
    test_rows: Any


def _split_table(train_config: Any, inputs: dict[str, Any]) -> _TableSplit:
    """Read ``--data`` (and ``--test-data``) in float64 and split its rows, seeded by the run."""
    import numpy as np

    from flowkit.data.tables import check_same_columns, read_table, split_indices

    columns, context_columns = inputs["columns"], inputs["context_columns"]
    table = read_table(train_config.data, columns=columns, context_columns=context_columns)
    seed = train_config.seed
    if inputs["test_data"] is not None:
        test = read_table(inputs["test_data"], columns=columns, context_columns=context_columns)
        check_same_columns(table, test)
        train_rows, test_rows = np.arange(len(table)), None
    else:
        train_rows, test_rows = split_indices(
            len(table), inputs["test_fraction"], seed, name="test", source=table.source
        )
        test = table.take(test_rows)
    validation_rows = None
    if train_config.val_fraction > 0:
        kept, held = split_indices(
            len(train_rows),
            train_config.val_fraction,
            seed,
            stream=1,
            name="val",
            source=f"{table.source}'s training rows",
        )
        train_rows, validation_rows = train_rows[kept], train_rows[held]
    return _TableSplit(table, test, train_rows, validation_rows, test_rows)


def _standardized_flow(
    entry: Any, model_config: Any, train: Any, files: tuple
) -> tuple[Any, dict[str, Any]]:
    """The model behind the training rows' standardisation, and the statistics it keeps.

    Every value of the tables read (``files``) is checked against the model's domain and the
    range its precision holds once standardised.
    """
    from flowkit.data.tables import Standardization
    from flowkit.distributions.standardized import check_data_support, standardizes_data
    from flowkit.presets.standardize import standardized_from_dict

    # Statistics of the training rows only, in float64; the flow standardises in float64 and only
    # then works in its own precision.
    statistics = Standardization.fit(train).to_dict()
    model = entry.build(model_config)
    if not standardizes_data(model):
        # A flow over a bounded domain (angles) takes its values as they are: unit statistics
        # for the data (the context is still standardised), and every value checked.
        for part in files:
            try:
                check_data_support(model, part.values, part.source, part.columns)
            except ValueError as error:
                raise UsageError(str(error)) from None
        features = len(train.columns)
        statistics = {**statistics, "mean": [0.0] * features, "std": [1.0] * features}
    flow = standardized_from_dict(model, statistics)
    # A cell the model's precision overflows on is named now, rather than found as a divergence.
    dtype = next(flow.parameters()).dtype
    for part in files:
        check_table_range(part, statistics, dtype)
    return flow, statistics


def _table_data_info(
    train_config: Any,
    inputs: dict[str, Any],
    split: _TableSplit,
    train: Any,
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """What a table run records of its data: columns, statistics, sources and the split."""
    from flowkit.data.tables import file_digest

    return {
        "columns": list(train.columns),
        "context_columns": list(train.context_columns),
        "standardization": statistics,
        "source": _source(train_config.data),
        "test_source": None if inputs["test_data"] is None else _source(inputs["test_data"]),
        "test_fraction": inputs["test_fraction"],
        "val_fraction": train_config.val_fraction,
        "split_seed": train_config.seed,
        # The split, as row indices of the file, and the files' digests: eval scores exactly
        # these rows and refuses a file that changed.
        "rows": len(split.table),
        "sha256": file_digest(train_config.data),
        "test_sha256": None if inputs["test_data"] is None else file_digest(inputs["test_data"]),
        "split": {
            "train": _row_indices(split.train_rows),
            "validation": _row_indices(split.validation_rows),
            "test": _row_indices(split.test_rows),
        },
    }


def _arrays(part: Any) -> Any:
    """A table's values, with its context when it has one, as the trainer takes them."""
    return part.values if part.context is None else (part.values, part.context)


def _row_indices(rows: Any) -> Any:
    """Row indices as an int64 tensor (None stays None)."""
    import torch

    return None if rows is None else torch.as_tensor(rows, dtype=torch.int64)


# Small tables get at least this many batches an epoch (as flowkit.fit does).
MIN_BATCHES_PER_EPOCH = 4


def _batch_for(train_config: Any, rows: int) -> Any:
    """``train_config`` with a batch size that gives a small table several batches an epoch."""
    import sys

    batch = train_config.batch_size
    if rows >= MIN_BATCHES_PER_EPOCH * batch:
        return train_config
    adapted = max(1, rows // MIN_BATCHES_PER_EPOCH)
    print(
        f"flowkit: batch size {batch} -> {adapted}: the table has {rows} training rows, and an "
        f"epoch takes at least {MIN_BATCHES_PER_EPOCH} batches",
        file=sys.stderr,
    )
    return dataclasses.replace(train_config, batch_size=adapted)
