"""The ``flowkit`` command: train, eval, sample, interpolate, manipulate, presets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit import __version__

__all__ = ["CommandError", "UsageError", "build_parser", "main"]

# Exit statuses: argparse already exits with 2 for its own errors, and shells report a process
# stopped by Ctrl-C (SIGINT, signal 2) as 128 + 2.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

SET_HELP = (
    "override one setting, as section.name=value with section 'model' (the preset's model "
    "config) or 'train' (TrainConfig); the value is read as JSON when it parses (numbers, "
    "true/false, null, lists), else as a string; a single number is accepted where a list is "
    "expected. Repeatable. Example: --set model.K=8 --set train.lr=0.0005"
)

# Keys of a run's config.json that record the run rather than set it; ignored on input.
_RECORD_KEYS = frozenset({"data", "versions", "started"})
# Keys of config.json that choose the data of a run; the options of the same names override them.
_INPUT_KEYS = ("test_data", "test_fraction", "columns", "context_columns")
# Temperatures of the image grids 'flowkit sample' draws by default.
IMAGE_TEMPERATURES = (0.0, 0.5, 0.7, 1.0)
# Image folders and tars split into these sub-folders hold a test split (flowkit.data.load_dataset).
_SPLIT_FOLDERS = ("train", "test", "val")


class CommandError(Exception):
    """A failure the command found while running (exit status 1); the message is one line."""

    status = EXIT_FAILURE


class UsageError(CommandError):
    """A command-line value that is not allowed (exit status 2); the message names the value."""

    status = EXIT_USAGE


# --- checks of command-line values ---------------------------------------------------------------
def _check_positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{flag} expects a positive integer, got {value}")


def _check_positive_float(flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} expects a finite number > 0, got {value}")


def _check_fraction(flag: str, value: float | None) -> None:
    if value is not None and not 0 < value < 1:
        raise UsageError(f"{flag} expects a fraction between 0 and 1 (exclusive), got {value}")


def _check_path(flag: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise UsageError(f"{flag} expects a path, got an empty string")


def _check_temperatures(values: Sequence[float] | None) -> None:
    for value in values or ():
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--temperatures expects finite numbers >= 0, got {value}")


def _available_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _check_device(value: str | None, *, auto: bool = False) -> None:
    """A UsageError unless ``value`` names a device this machine has."""
    import torch

    if value is None or value == "cpu" or (auto and value == "auto"):
        return
    allowed = (["auto"] if auto else []) + _available_devices()
    try:
        device = torch.device(value)
    except RuntimeError:
        raise UsageError(f"--device expects one of {', '.join(allowed)}, got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {value}: CUDA is not available on this machine; available: "
                f"{', '.join(allowed)}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"available: {', '.join(allowed)}"
            )
    elif device.type == "mps" and "mps" not in allowed:
        raise UsageError(f"--device {value}: MPS is not available; available: {', '.join(allowed)}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device expects one of {', '.join(allowed)}, got {value!r}")


def _has_split_folders(path: Path) -> bool:
    return any((path / name).is_dir() for name in _SPLIT_FOLDERS)


# --- configuration ------------------------------------------------------------------------------
@dataclasses.dataclass
class _Settings:
    """Everything ``flowkit train`` was told, merged: preset, config file, options, --set."""

    preset: str | None
    model_name: str
    model: dict[str, Any]
    train: dict[str, Any]
    inputs: dict[str, Any]


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"no config file at {file}")
    text = file.read_text()
    if file.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            raise UsageError("TOML config files need Python 3.11+; use JSON") from None
        content = tomllib.loads(text)
    else:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise UsageError(f"{file} must hold an object with 'preset', 'model' and 'train' sections")
    allowed = {"preset", "model_name", "model", "train", *_INPUT_KEYS}
    unknown = set(content) - allowed - _RECORD_KEYS
    if unknown:
        raise UsageError(
            f"{file} has unknown sections {sorted(unknown)}; expected some of {sorted(allowed)}"
        )
    for section in ("model", "train"):
        if not isinstance(content.get(section) or {}, dict):
            raise UsageError(f"{file}: the {section!r} section must be an object")
    return {key: value for key, value in content.items() if key not in _RECORD_KEYS}


def _parse_override(text: str) -> tuple[str, str, Any]:
    key, separator, raw = text.partition("=")
    section, dot, name = key.partition(".")
    if not separator or not dot or section not in ("model", "train") or not name:
        raise UsageError(
            f"--set expects section.name=value with section model or train, got {text!r}"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, name, value


def _fill(config_class: type, section: str, values: dict[str, Any]) -> Any:
    """``config_class(**values)``, naming unknown settings and turning lists into tuples."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = set(values) - set(fields)
    if unknown:
        raise UsageError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(fields)}")
    values = dict(values)
    for name, value in values.items():
        annotation = str(fields[name].type)
        if not annotation.startswith("tuple["):
            continue
        # A single number where a variable-length tuple is expected means a one-element tuple.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "..." in annotation:
            values[name] = (value,)
        elif isinstance(value, list):
            values[name] = tuple(value)
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(_one_line(error)) from None


def _settings(args: argparse.Namespace) -> _Settings:
    """Merge preset, config file, explicit options and --set overrides, in that order."""
    from flowkit.presets.runs import get_run_preset

    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    file_content = _read_config_file(args.config) if args.config else {}
    preset_name = args.preset or file_content.get("preset")
    model_name = file_content.get("model_name") or "glow"
    if preset_name:
        try:
            preset = get_run_preset(preset_name)
        except ValueError as error:
            raise UsageError(_one_line(error)) from None
        model.update(preset.model)
        train.update(preset.train)
        model_name = preset.model_name
    model.update(file_content.get("model") or {})
    train.update(file_content.get("train") or {})
    explicit = {
        "data": args.data,
        "output": args.output,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "device": args.device,
        "seed": args.seed,
        "n_bits": args.n_bits,
    }
    train.update({k: v for k, v in explicit.items() if v is not None})
    if args.num_classes is not None:
        model["num_classes"] = args.num_classes
    if args.memory_saving:
        model["memory_saving"] = True
    if args.no_progress:
        train["progress"] = False
    if args.tensorboard:
        train["tensorboard"] = True
    for text in args.set or []:
        section, name, value = _parse_override(text)
        (model if section == "model" else train)[name] = value
    inputs = {key: file_content.get(key) for key in _INPUT_KEYS}
    for key in _INPUT_KEYS:
        if getattr(args, key) is not None:
            inputs[key] = getattr(args, key)
    return _Settings(preset_name, model_name, model, train, inputs)


def _model_entry(name: str) -> Any:
    from flowkit.presets.registry import get_model

    try:
        return get_model(name)
    except ValueError as error:
        raise UsageError(_one_line(error)) from None


def _model_config(settings: _Settings, entry: Any, **from_data: Any) -> Any:
    """The model family's config; ``from_data`` (features, ...) must agree with any setting."""
    values = dict(settings.model)
    for name, value in from_data.items():
        if values.get(name, value) != value:
            raise UsageError(
                f"model.{name} is set by the data to {value}, got {values[name]}; leave it out"
            )
        values[name] = value
    return _fill(entry.config_class, "model", values)


def resolve_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model config and :class:`~flowkit.train.TrainConfig` of an image run's options."""
    from flowkit.train.config import TrainConfig

    settings = _settings(args)
    model_config = _model_config(settings, _model_entry(settings.model_name))
    return model_config, _fill(TrainConfig, "train", settings.train)


# --- train --------------------------------------------------------------------------------------
def _check_train_args(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--epochs", args.epochs),
        ("--max-steps", args.max_steps),
        ("--batch-size", args.batch_size),
        ("--n-bits", args.n_bits),
    ):
        _check_positive(flag, value)
    _check_positive_float("--lr", args.lr)
    _check_positive_float("--max-minutes", args.max_minutes)
    _check_fraction("--test-fraction", args.test_fraction)
    for flag in ("--data", "--test-data", "--output", "--config"):
        _check_path(flag, getattr(args, flag[2:].replace("-", "_")))
    for flag in ("--columns", "--context-columns"):
        for name in getattr(args, flag[2:].replace("-", "_")) or ():
            if not name.strip():
                raise UsageError(f"{flag} expects column names, got an empty one")
    if args.resume and args.overwrite:
        raise UsageError(
            "--resume continues the run in the output directory and --overwrite replaces it; "
            "give one of them"
        )
    _check_device(args.device, auto=True)


def _tune_allocator() -> None:
    from flowkit.performance import tune_allocator

    # Large activations stay on the heap instead of being mapped and unmapped every step.
    tune_allocator()


def _train(args: argparse.Namespace) -> int:
    from flowkit.train import Trainer
    from flowkit.train.config import TrainConfig

    _check_train_args(args)
    _tune_allocator()
    settings = _settings(args)
    entry = _model_entry(settings.model_name)
    train_config = _fill(TrainConfig, "train", settings.train)
    if entry.kind == "vector":
        prepared = _prepare_tables(args, settings, entry, train_config)
    else:
        prepared = _prepare_images(args, settings, entry, train_config)
    if prepared is None:
        return 0
    flow, model_config, train_data, test_data, data_info = prepared
    inputs = {key: value for key, value in settings.inputs.items() if value is not None}
    trainer = Trainer(
        flow,
        train_config,
        train_data,
        test_data,
        model_name=entry.name,
        model_config=model_config,
        data_info=data_info,
        run_info={"preset": settings.preset, **inputs},
    )
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if trainer.process.is_main:
        values = [value for _, value in result.test_history]
        measure = "bits/dim" if result.unit == "bits/dim" else "NLL (nats per example)"
        if values:
            summary = f"test {measure} {values[0]:.4f} at the start, {values[-1]:.4f} at the end"
        else:
            summary = "no test evaluation"
        print(f"trained {result.steps} steps; {summary}; outputs in {result.output}")
    return 0


def _print_config(settings: _Settings, model_config: Any, train_config: Any) -> None:
    inputs = {key: value for key, value in settings.inputs.items() if value is not None}
    effective = {
        "preset": settings.preset,
        "model_name": settings.model_name,
        "model": dataclasses.asdict(model_config),
        "train": dataclasses.asdict(train_config),
        **inputs,
    }
    print(json.dumps(effective, indent=2))


def _source(path: str) -> str:
    """A path as an absolute one (so eval finds it from anywhere); a dataset name as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _prepare_images(
    args: argparse.Namespace, settings: _Settings, entry: Any, train_config: Any
) -> tuple | None:
    for flag, key in (("--columns", "columns"), ("--context-columns", "context_columns")):
        if settings.inputs[key] is not None:
            raise UsageError(f"{flag} is for tables; the {entry.name} model trains on images")
    if settings.inputs["test_fraction"] is not None:
        raise UsageError(
            "--test-fraction is for tables; give an image run's test images with --test-data"
        )
    model_config = _model_config(settings, entry)
    if args.print_config:
        _print_config(settings, model_config, train_config)
        return None
    num_classes = getattr(model_config, "num_classes", None)
    test_path = settings.inputs["test_data"]
    train_data, test_data = _image_splits(train_config, test_path, num_classes)
    data_info = {
        "source": _source(train_config.data),
        "test_source": None if test_path is None else _source(test_path),
        "num_classes": num_classes,
    }
    return entry.build(model_config), model_config, train_data, test_data, data_info


def _image_splits(config: Any, test_path: str | None, num_classes: int | None) -> tuple:
    """The training and test images, padded by ``config.pad``."""
    import torch.nn.functional as F

    from flowkit.data import DataError, load_dataset

    data_path = Path(config.data)
    if test_path is None and data_path.is_dir() and not _has_split_folders(data_path):
        raise UsageError(
            f"{config.data} has no test split (no train/ and test/ folders); a run needs test "
            "images: give them with --test-data PATH or put them in a test/ folder"
        )
    train = load_dataset(config.data, split="train")
    if test_path is None:
        test = load_dataset(config.data, split="test")
    elif Path(test_path).is_dir() and not _has_split_folders(Path(test_path)):
        # An unsplit folder holds one split, which load_dataset calls 'train': all its images.
        test = load_dataset(test_path, split="train")
    else:
        try:
            test = load_dataset(test_path, split="test")
        except DataError:
            if not Path(test_path).is_file():
                raise
            # A tar of images without split folders: all its images.
            test = load_dataset(test_path, split="train")
    splits = []
    for data, split in ((train, "training"), (test, "test")):
        if config.pad:
            padded = F.pad(data.images, (config.pad,) * 4)
            data = dataclasses.replace(data, images=padded.contiguous())
        if num_classes is not None and data.labels is None:
            raise UsageError(
                f"a class-conditional model needs labels, but the {split} images "
                f"({data.source}) have none"
            )
        splits.append(data)
    return splits[0], splits[1]


def _prepare_tables(
    args: argparse.Namespace, settings: _Settings, entry: Any, train_config: Any
) -> tuple | None:
    import numpy as np

    from flowkit.data.tables import Standardization, check_same_columns, read_table, split_table
    from flowkit.presets.standardize import standardized_from_dict

    inputs = settings.inputs
    if inputs["test_data"] is None and inputs["test_fraction"] is None:
        raise UsageError(
            f"a table run needs a test set: give --test-data TABLE or --test-fraction F "
            f"(e.g. 0.1) to hold out part of {train_config.data}"
        )
    if inputs["test_data"] is not None and inputs["test_fraction"] is not None:
        raise UsageError("give --test-data or --test-fraction, not both")
    columns, context_columns = inputs["columns"], inputs["context_columns"]
    train = read_table(train_config.data, columns=columns, context_columns=context_columns)
    if inputs["test_data"] is not None:
        test = read_table(inputs["test_data"], columns=columns, context_columns=context_columns)
        check_same_columns(train, test)
    else:
        train, test = split_table(train, inputs["test_fraction"], train_config.seed)
    model_config = _model_config(
        settings,
        entry,
        features=len(train.columns),
        context_features=len(train.context_columns) or None,
    )
    if args.print_config:
        _print_config(settings, model_config, train_config)
        return None
    statistics = Standardization.fit(train).to_dict()
    flow = standardized_from_dict(entry.build(model_config), statistics)

    def as_float32(table: Any) -> Any:
        values = np.asarray(table.values, dtype=np.float32)
        if table.context is None:
            return values
        return values, np.asarray(table.context, dtype=np.float32)

    data_info = {
        "columns": list(train.columns),
        "context_columns": list(train.context_columns),
        "standardization": statistics,
        "source": _source(train_config.data),
        "test_source": None if inputs["test_data"] is None else _source(inputs["test_data"]),
        "test_fraction": inputs["test_fraction"],
        "split_seed": train_config.seed,
    }
    return flow, model_config, as_float32(train), as_float32(test), data_info


# --- reading a trained run ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Run:
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
    def is_table(self) -> bool:
        return self.data.get("kind") == "vector"

    @property
    def n_bits(self) -> int:
        return int(self.data.get("n_bits", self.train_config.get("n_bits", 8)))

    @property
    def columns(self) -> list[str]:
        return list(self.data.get("columns") or [])

    @property
    def context_columns(self) -> list[str]:
        return list(self.data.get("context_columns") or [])


def _open_run(args: argparse.Namespace) -> _Run:
    from flowkit.train import load_flow

    _check_device(args.device)
    _tune_allocator()
    flow, state = load_flow(args.checkpoint, weights=args.weights, map_location=args.device)
    data = dict(state.get("data") or {"kind": "image"})
    model_config = state.get("model_config") or {}
    num_classes = data.get("num_classes", model_config.get("num_classes"))
    return _Run(
        checkpoint=Path(args.checkpoint),
        flow=flow,
        model_name=state.get("model_name"),
        data=data,
        train_config=dict(state.get("train_config") or {}),
        num_classes=num_classes,
    )


def _require_images(run: _Run, command: str) -> None:
    if run.is_table:
        raise UsageError(
            f"{command} works on image models; {run.checkpoint} holds a table model "
            f"({run.model_name})"
        )


def _run_images(run: _Run, data: str | None, split: str) -> Any:
    """The image split named by ``--data``/``--split`` (default: the run's own data), padded."""
    import torch.nn.functional as F

    from flowkit.data import load_dataset

    if data is None and split == "test" and run.data.get("test_source"):
        data, split = run.data["test_source"], "train"
        if not Path(data).is_dir() or _has_split_folders(Path(data)):
            split = "test"
    images = load_dataset(data or run.data.get("source") or run.train_config["data"], split=split)
    pad = int(run.train_config.get("pad") or 0)
    if pad:
        images = dataclasses.replace(images, images=F.pad(images.images, (pad,) * 4).contiguous())
    return images


def _run_table(run: _Run, data: str | None, split: str) -> Any:
    """The rows named by ``--data`` (all of them) or the run's own ``split``."""
    from flowkit.data.tables import read_table, split_table

    def read(path: str) -> Any:
        return read_table(
            path, columns=run.columns or None, context_columns=run.context_columns or None
        )

    if data is not None:
        return read(data)
    source, test_source = run.data.get("source"), run.data.get("test_source")
    if split == "test" and test_source:
        return read(test_source)
    if source is None:
        raise UsageError(
            f"{run.checkpoint} does not record where its data came from; give it with --data TABLE"
        )
    fraction = run.data.get("test_fraction")
    if fraction is None:
        return read(source)
    train, test = split_table(read(source), fraction, int(run.data.get("split_seed") or 0))
    return test if split == "test" else train


def _check_indices(flag: str, indices: Sequence[int], data: Any) -> None:
    count = data.images.shape[0]
    for index in indices:
        if not 0 <= index < count:
            raise UsageError(
                f"{flag} expects indices in [0, {count}) ({data.source} has {count} images), "
                f"got {index}"
            )


def _check_common(args: argparse.Namespace) -> None:
    _check_path("checkpoint", args.checkpoint)
    for flag in ("--data", "--output"):
        _check_path(flag, getattr(args, flag[2:], None))


# --- eval ---------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from flowkit.train.data import as_training_data
    from flowkit.train.distributed import Process

    _check_common(args)
    _check_positive("--batch-size", args.batch_size)
    _check_positive("--num-test", args.num_test)
    run = _open_run(args)
    if run.is_table:
        table = _run_table(run, args.data, args.split)
        values = np.asarray(table.values, dtype=np.float32)
        if table.context is not None:
            values = (values, np.asarray(table.context, dtype=np.float32))
        data = as_training_data(values, limit=args.num_test)
        source = table.source
    else:
        images = _run_images(run, args.data, args.split)
        data = as_training_data(images, run.n_bits, args.num_test)
        source = images.source
    data.check_against(run.flow, args.split)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    flow = run.flow.to(dtype)
    process = Process(device=torch.device(args.device))
    with torch.no_grad():
        value = data.evaluate(flow, args.batch_size, process, dtype=dtype)
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
        split=args.split if args.data is None or not run.is_table else "all",
        examples=len(data),
        dtype=args.dtype,
        weights=args.weights,
    )
    if args.json:
        print(json.dumps(result))
    elif run.is_table:
        rows = "rows" if args.data is not None else f"{args.split} rows"
        print(f"{result['nll']:.4f} nats per example on {len(data)} {rows} of {source}")
    else:
        print(
            f"{value:.4f} bits/dim ({result['nll']:.2f} nats per image) on {len(data)} "
            f"{args.split} images of {source}"
        )
    return 0


# --- sample -------------------------------------------------------------------------------------
def _sample(args: argparse.Namespace) -> int:
    _check_common(args)
    _check_positive("--num", args.num)
    _check_temperatures(args.temperatures)
    run = _open_run(args)
    if run.is_table:
        return _sample_rows(args, run)
    return _sample_images(args, run)


def _sample_images(args: argparse.Namespace, run: _Run) -> int:
    import torch

    from flowkit.data import save_image_grid, to_uint8

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
    output.mkdir(parents=True, exist_ok=True)
    context = None
    if run.num_classes is not None:
        classes = [args.label] if args.label is not None else list(range(run.num_classes))
        context = torch.tensor(
            [classes[i % len(classes)] for i in range(args.num)], device=args.device
        )
    for temperature in args.temperatures or IMAGE_TEMPERATURES:
        torch.manual_seed(args.seed)
        with torch.no_grad():
            images = run.flow.sample(
                args.num if context is None else None, context=context, temperature=temperature
            )
        images = images.float().cpu()
        bad = ~torch.isfinite(images)
        if bool(bad.any()):
            print(
                f"flowkit: warning: {int(bad.sum())} non-finite sample values at temperature "
                f"{temperature} (the inverse overflowed); drawn mid-grey",
                file=sys.stderr,
            )
        path = output / f"samples_t{temperature:.2f}.png"
        save_image_grid(to_uint8(images.masked_fill(bad, 0.0), run.n_bits), path)
        print(path)
    return 0


def _parse_context(items: Sequence[str] | None, run: _Run) -> list[float] | None:
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


def _sample_rows(args: argparse.Namespace, run: _Run) -> int:
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
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if context_values is None:
            rows = run.flow.sample(args.num, temperature=temperatures[0])
            context = None
        else:
            context = torch.tensor([context_values] * args.num, device=args.device)
            rows = run.flow.sample(None, context=context, temperature=temperatures[0])
    rows = rows.float().cpu().numpy()
    bad = int((~np.isfinite(rows)).any(axis=1).sum())
    if bad:
        print(
            f"flowkit: warning: {bad} of {args.num} sampled rows have non-finite values",
            file=sys.stderr,
        )
    columns = run.columns or [f"x{index}" for index in range(rows.shape[1])]
    if context is not None:
        rows = np.concatenate([rows, context.float().cpu().numpy()], axis=1)
        columns = columns + run.context_columns
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table(output, rows, columns)
    print(output)
    return 0


# --- interpolate and manipulate -----------------------------------------------------------------
def _model_inputs(images: Any, n_bits: int, device: str) -> Any:
    from flowkit.data import to_model_input

    # The centre of each pixel's bin: the same encoding every time, no dequantisation noise.
    return to_model_input(images, n_bits, dequantize=False).to(device) + 0.5 / 2**n_bits


def _interpolate(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_uint8
    from flowkit.latent import interpolate

    _check_common(args)
    if args.steps < 2:
        raise UsageError(f"--steps expects an integer >= 2 (both ends are drawn), got {args.steps}")
    if len(args.first) != len(args.second):
        raise UsageError(
            f"--first and --second expect the same number of indices (one row per pair), got "
            f"{len(args.first)} and {len(args.second)}"
        )
    run = _open_run(args)
    _require_images(run, "interpolate")
    data = _run_images(run, args.data, args.split)
    _check_indices("--first", args.first, data)
    _check_indices("--second", args.second, data)
    if run.flow.context_shape is not None and data.labels is None:
        raise UsageError(f"the model is class-conditional but {data.source} has no labels")
    rows = []
    for a, b in zip(args.first, args.second):
        images = _model_inputs(data.images[[a, b]], run.n_bits, args.device)
        labels = None if run.flow.context_shape is None else data.labels[a].to(args.device)
        rows.append(interpolate(run.flow, images[0], images[1], args.steps, context=labels))
    path = Path(args.output) if args.output else run.directory / "samples" / "interpolation.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(to_uint8(torch.cat(rows).float().cpu(), run.n_bits), path, nrow=args.steps)
    print(path)
    return 0


def _manipulate(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_uint8
    from flowkit.latent import attribute_direction, manipulate

    _check_common(args)
    if args.steps < 2:
        raise UsageError(f"--steps expects an integer >= 2, got {args.steps}")
    _check_positive("--num-reference", args.num_reference)
    if not math.isfinite(args.scale):
        raise UsageError(f"--scale expects a finite number, got {args.scale}")
    run = _open_run(args)
    _require_images(run, "manipulate")
    data = _run_images(run, args.data, args.split)
    if data.labels is None:
        raise UsageError(
            f"manipulate needs labelled data (class labels serve as attributes); {data.source} "
            "has no labels"
        )
    _check_indices("--indices", args.indices, data)
    count = min(args.num_reference, data.images.shape[0])
    labels = data.labels[:count]
    present = sorted(int(label) for label in torch.unique(labels))
    if args.attribute not in present:
        raise UsageError(
            f"--attribute {args.attribute} is not among the labels of the first {count} "
            f"images of {data.source}: {present}"
        )
    images = _model_inputs(data.images[:count], run.n_bits, args.device)
    context = None if run.flow.context_shape is None else labels.to(args.device)
    direction = attribute_direction(run.flow, images, labels == args.attribute, context=context)
    scales = torch.linspace(-args.scale, args.scale, args.steps).tolist()
    rows = []
    for index in args.indices:
        image = _model_inputs(data.images[index : index + 1], run.n_bits, args.device)[0]
        label = None if context is None else data.labels[index].to(args.device)
        rows.append(manipulate(run.flow, image, direction, scales, context=label))
    path = Path(args.output) if args.output else run.directory / "samples" / "manipulation.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(to_uint8(torch.cat(rows).float().cpu(), run.n_bits), path, nrow=args.steps)
    print(path)
    return 0


def _presets(args: argparse.Namespace) -> int:
    from flowkit.presets.runs import RUN_PRESETS

    for name, preset in sorted(RUN_PRESETS.items()):
        print(f"{name:18s} {preset.description}\n{'':18s} source: {preset.source}")
    return 0


# --- parser -------------------------------------------------------------------------------------
def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the command name (the command's copy never resets them)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the full traceback of an error",
    )
    if top:
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt written by 'flowkit train'")
    parser.add_argument(
        "--weights",
        choices=("averaged", "raw"),
        default="averaged",
        help="the Polyak-averaged weights (default; the raw ones if the run kept no average) or "
        "the raw optimised ones",
    )
    parser.add_argument(
        "--device", default="cpu", help="device to run on: cpu (default), cuda or cuda:N"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="dataset to read (default: the one the model was trained on)"
    )
    parser.add_argument(
        "--split", choices=("train", "test"), default="test", help="which split (default: test)"
    )


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a model",
        description="Train a model. Settings come from --preset, then --config, then the options "
        "below, then --set overrides. Run under torchrun for several processes (DDP). Writes "
        "config.json, checkpoint.pt, metrics.jsonl, a learning curve and samples to the output "
        "directory.",
    )
    _add_global_options(train, top=False)
    train.add_argument(
        "--preset", help="named run (see 'flowkit presets'), e.g. glow-small or glow-cifar10"
    )
    train.add_argument(
        "--config",
        help="JSON (or TOML on Python 3.11+) file with 'preset', 'model' and 'train' sections, "
        "e.g. a run's own config.json",
    )
    train.add_argument(
        "--data",
        help="dataset: fashion-mnist-small (bundled) or a path (CIFAR batches, idx files, "
        "ImageNet npz, image folder or tar)",
    )
    train.add_argument(
        "--test-data",
        help="test set: a table with the columns of --data, or images (a folder or tar without "
        "split folders counts whole)",
    )
    train.add_argument(
        "--test-fraction",
        type=float,
        help="tables: hold out this fraction of --data (seeded by --seed) when there is no "
        "--test-data",
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
        help="tables: columns the flow is conditioned on (a conditional density of the others)",
    )
    train.add_argument("--output", help="output directory")
    train.add_argument("--epochs", type=int, help="number of epochs")
    train.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    train.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this many minutes of wall-clock time (a checkpoint is written)",
    )
    train.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    train.add_argument("--lr", type=float, help="base learning rate")
    train.add_argument("--n-bits", type=int, help="bits per pixel kept from the data (e.g. 5)")
    train.add_argument(
        "--num-classes", type=int, help="train a class-conditional model with this many classes"
    )
    train.add_argument(
        "--memory-saving",
        action="store_true",
        help="invertible backpropagation: memory flat in depth K",
    )
    train.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, help="seed of data order, noise and initialisation")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from OUTPUT/checkpoint.pt if it exists",
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
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument("--set", action="append", metavar="SECTION.NAME=VALUE", help=SET_HELP)
    train.set_defaults(handler=_train)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowkit`` command."""
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Train normalizing flows (Glow and the other presets) and use trained ones.",
    )
    _add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)

    evaluate = commands.add_parser(
        "eval",
        help="negative log-likelihood (and bits/dim) of a trained model on a dataset",
        description="Evaluate the mean negative log-likelihood, and bits per dimension for "
        "images, with fixed dequantisation noise; the result does not depend on the batch size.",
    )
    _add_global_options(evaluate, top=False)
    _add_checkpoint_options(evaluate)
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--batch-size", type=int, default=256, help="evaluation batch size (default 256)"
    )
    evaluate.add_argument("--num-test", type=int, help="evaluate only the first N examples")
    evaluate.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="arithmetic precision"
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    evaluate.set_defaults(handler=_eval)

    sample = commands.add_parser(
        "sample",
        help="sample image grids or table rows",
        description="Sample from a trained model: image grids, one PNG per temperature, or rows "
        "of a table (with the column names) as CSV.",
    )
    _add_global_options(sample, top=False)
    _add_checkpoint_options(sample)
    sample.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        help="standard deviations of the base noise (Glow's eps_std); images: default 0 0.5 "
        "0.7 1; tables: one value, default 1",
    )
    sample.add_argument(
        "--num", type=int, default=64, help="images per grid or rows of a table (default 64)"
    )
    sample.add_argument(
        "--label", type=int, help="class-conditional models: sample this class only"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--context",
        nargs="+",
        metavar="NAME=VALUE",
        help="conditional table models: the value of every context column, each once",
    )
    sample.add_argument(
        "--output",
        help="images: a directory for the grids (default: samples/ in the run directory); "
        "tables: a .csv file (default: samples/samples.csv in the run directory)",
    )
    sample.set_defaults(handler=_sample)

    interp = commands.add_parser(
        "interpolate",
        help="walk between two images in latent space",
        description="Decode points on the line between the latents of two dataset images; one "
        "row per pair.",
    )
    _add_global_options(interp, top=False)
    _add_checkpoint_options(interp)
    _add_data_options(interp)
    interp.add_argument(
        "--first", type=int, nargs="+", default=[0], help="indices of the first images"
    )
    interp.add_argument(
        "--second", type=int, nargs="+", default=[1], help="indices of the second images"
    )
    interp.add_argument(
        "--steps", type=int, default=8, help="points per row, ends included (default 8)"
    )
    interp.add_argument(
        "--output", help="output PNG (default: samples/interpolation.png in the run directory)"
    )
    interp.set_defaults(handler=_interpolate)

    manip = commands.add_parser(
        "manipulate",
        help="move images along an attribute direction",
        description="Compute the attribute direction as the mean latent of images with the label "
        "minus the mean latent of the others (Glow section 6; class labels serve as attributes) "
        "and move images along it.",
    )
    _add_global_options(manip, top=False)
    _add_checkpoint_options(manip)
    _add_data_options(manip)
    manip.add_argument(
        "--attribute", type=int, required=True, help="label value that marks the attribute"
    )
    manip.add_argument(
        "--indices", type=int, nargs="+", default=[0], help="images to move (one row each)"
    )
    manip.add_argument(
        "--scale", type=float, default=1.0, help="largest step along the direction (default 1)"
    )
    manip.add_argument(
        "--steps", type=int, default=5, help="points per row from -scale to +scale (default 5)"
    )
    manip.add_argument(
        "--num-reference", type=int, default=2000, help="images used to compute the direction"
    )
    manip.add_argument(
        "--output", help="output PNG (default: samples/manipulation.png in the run directory)"
    )
    manip.set_defaults(handler=_manipulate)

    presets = commands.add_parser(
        "presets",
        help="list the named presets",
        description="List the named training presets and where their settings come from.",
    )
    _add_global_options(presets, top=False)
    presets.set_defaults(handler=_presets)
    return parser


# --- the error boundary -------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _describe(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception that ended a command."""
    from flowkit.data import DataError
    from flowkit.train import CheckpointError, NonFiniteError

    interrupted = _library_class("TrainingInterrupted")
    if interrupted is not None and isinstance(error, interrupted):
        return _one_line(error), EXIT_INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(error, CommandError):
        return _one_line(error), error.status
    known = tuple(
        cls
        for cls in (_library_class("FlowkitError"), DataError, CheckpointError, NonFiniteError)
        if cls is not None
    )
    if isinstance(error, known):
        return _one_line(error), EXIT_FAILURE
    if isinstance(error, OSError):
        if error.strerror and error.filename is not None:
            return f"{error.strerror}: {error.filename}", EXIT_FAILURE
        return _one_line(error), EXIT_FAILURE
    if isinstance(error, (ValueError, TypeError)):
        return _one_line(error), EXIT_FAILURE
    return (
        f"{type(error).__name__}: {_one_line(error)} (rerun with --debug for the traceback)",
        EXIT_FAILURE,
    )


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings as one line each, like the errors (the source line means nothing to a user)."""
    print(f"flowkit: warning: {_one_line(str(message))}", file=sys.stderr)


def _library_class(name: str) -> type | None:
    """One of flowkit's exception classes by name, where this version defines it."""
    import importlib

    for module in ("flowkit.errors", "flowkit.train"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` command.

    Every error ends the command with one line on stderr, ``flowkit: error: ...`` (a traceback
    only with ``--debug``) and a status: 2 for a value the command line does not allow (argparse's
    own errors included), 1 for a failure while running, 130 for Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.handler(args) or 0)
    except (Exception, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc()
        message, status = _describe(error)
        prefix = "flowkit: " if status == EXIT_INTERRUPTED else "flowkit: error: "
        print(prefix + message, file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
