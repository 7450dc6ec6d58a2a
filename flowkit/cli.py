"""The ``flowkit`` command: train, eval, sample, interpolate, manipulate, presets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

# Keys of a run directory's config.json that describe the run rather than set it.
_RECORD_KEYS = frozenset({"versions", "start_time", "started", "data"})
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
    unknown = set(content) - {"preset", "model", "train"} - _RECORD_KEYS
    if unknown:
        raise UsageError(
            f"{file} has unknown sections {sorted(unknown)}; expected 'preset', 'model', 'train'"
        )
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
        raise UsageError(str(error)) from None


def resolve_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """Merge preset, config file, explicit options and --set overrides, in that order.

    Returns the model config and the :class:`~flowkit.train.TrainConfig`.
    """
    from flowkit.presets.glow import GlowConfig
    from flowkit.train.config import TrainConfig

    sections, _ = _merged_sections(args)
    return _fill(GlowConfig, "model", sections["model"]), _fill(
        TrainConfig, "train", sections["train"]
    )


def _merged_sections(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], str | None]:
    from flowkit.presets.runs import get_run_preset

    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    file_content = _read_config_file(args.config) if args.config else {}
    preset_name = args.preset or file_content.get("preset")
    if preset_name:
        try:
            preset = get_run_preset(preset_name)
        except ValueError as error:
            raise UsageError(str(error)) from None
        sections["model"].update(preset.model)
        sections["train"].update(preset.train)
    for section in ("model", "train"):
        sections[section].update(file_content.get(section) or {})
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
    sections["train"].update({k: v for k, v in explicit.items() if v is not None})
    if args.num_classes is not None:
        sections["model"]["num_classes"] = args.num_classes
    if args.memory_saving:
        sections["model"]["memory_saving"] = True
    if args.no_progress:
        sections["train"]["progress"] = False
    if args.tensorboard:
        sections["train"]["tensorboard"] = True
    for text in args.set or []:
        section, name, value = _parse_override(text)
        sections[section][name] = value
    return sections, preset_name


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
    if args.resume and args.overwrite:
        raise UsageError(
            "--resume continues the run in the output directory and --overwrite replaces it; "
            "give one of them"
        )
    _check_device(args.device, auto=True)


def _train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    model_config, train_config = resolve_configs(args)
    if args.print_config:
        print(json.dumps(_effective_config(args, model_config, train_config), indent=2))
        return 0
    return _train_images(args, model_config, train_config)


def _effective_config(args: argparse.Namespace, model_config: Any, train_config: Any) -> dict:
    _, preset_name = _merged_sections(args)
    return {
        "preset": preset_name,
        "model": dataclasses.asdict(model_config),
        "train": dataclasses.asdict(train_config),
    }


def _image_splits(args: argparse.Namespace, config: Any, num_classes: int | None) -> tuple:
    """The training and test images, padded by ``config.pad``."""
    import torch.nn.functional as F

    from flowkit.data import DataError, load_dataset

    data_path = Path(config.data)
    if args.test_data is None and data_path.is_dir() and not _has_split_folders(data_path):
        raise UsageError(
            f"{config.data} has no test split (no train/ and test/ folders); a run needs test "
            "images: give them with --test-data PATH or put them in a test/ folder"
        )
    train = load_dataset(config.data, split="train")
    if args.test_data is None:
        test = load_dataset(config.data, split="test")
    else:
        test_path = Path(args.test_data)
        if test_path.is_dir() and not _has_split_folders(test_path):
            # An unsplit folder holds one split, which load_dataset calls 'train': all its images.
            test = load_dataset(test_path, split="train")
        else:
            try:
                test = load_dataset(test_path, split="test")
            except DataError:
                if test_path.is_dir():
                    raise
                test = load_dataset(test_path, split="train")
    splits = []
    for data, split in ((train, "train"), (test, "test")):
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


def _train_images(args: argparse.Namespace, model_config: Any, train_config: Any) -> int:
    from flowkit.presets.glow import build_glow, config_dict
    from flowkit.train import Trainer

    train_data, test_data = _image_splits(args, train_config, model_config.num_classes)
    flow = build_glow(model_config)
    trainer = Trainer(
        flow, train_config, train_data, test_data, model_config=config_dict(model_config)
    )
    fit_options = {"resume": args.resume}
    if args.overwrite:
        fit_options["overwrite"] = True
    result = trainer.fit(**fit_options)
    if trainer.process.is_main:
        _report_training(result, "test bits/dim")
    return 0


def _report_training(result: Any, measure: str) -> None:
    values = [value for _, value in result.test_bpd]
    if values:
        summary = f"{measure} {values[0]:.4f} at the start, {values[-1]:.4f} at the end"
    else:
        summary = f"no {measure} evaluated"
    print(f"trained {result.steps} steps; {summary}; outputs in {result.output}")


# --- reading a trained run ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Run:
    """A trained model and what its checkpoint says about the data."""

    checkpoint: Path
    flow: Any
    kind: str
    n_bits: int
    num_classes: int | None
    train_config: dict[str, Any]

    @property
    def directory(self) -> Path:
        return self.checkpoint.parent


def _open_run(args: argparse.Namespace) -> _Run:
    from flowkit.train import load_flow

    _check_device(args.device)
    weights = "ema" if args.weights == "averaged" else "raw"
    flow, state = load_flow(args.checkpoint, weights=weights, map_location=args.device)
    train_config = dict(state.get("train_config") or {})
    model_config = state.get("model_config") or {}
    return _Run(
        checkpoint=Path(args.checkpoint),
        flow=flow,
        kind="image",
        n_bits=int(train_config.get("n_bits", 8)),
        num_classes=model_config.get("num_classes"),
        train_config=train_config,
    )


def _run_images(run: _Run, data: str | None, split: str) -> Any:
    """The image split named by ``--data``/``--split`` (default: the run's own data), padded."""
    import torch.nn.functional as F

    from flowkit.data import load_dataset

    images = load_dataset(data or run.train_config.get("data"), split=split)
    pad = int(run.train_config.get("pad") or 0)
    if pad:
        images = dataclasses.replace(images, images=F.pad(images.images, (pad,) * 4).contiguous())
    return images


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
    import torch

    from flowkit.train.data import as_training_data
    from flowkit.train.distributed import Process

    _check_common(args)
    _check_positive("--batch-size", args.batch_size)
    _check_positive("--num-test", args.num_test)
    run = _open_run(args)
    images = _run_images(run, args.data, args.split)
    data = as_training_data(images, run.n_bits, args.num_test)
    data.check_against(run.flow, args.split)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    flow = run.flow.to(dtype)
    process = Process(device=torch.device(args.device))
    with torch.no_grad():
        bits_per_dim = data.evaluate(flow, args.batch_size, process, dtype=dtype)
    dims = math.prod(images.images.shape[1:])
    nll = bits_per_dim * dims * math.log(2)
    if not math.isfinite(nll):
        raise CommandError(
            f"the model in {run.checkpoint} gives a non-finite log-likelihood ({nll}) on "
            f"{len(data)} examples of {images.source}; try --weights raw or an earlier checkpoint"
        )
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(images.source),
        "split": args.split,
        "nll": nll,
        "bits_per_dim": bits_per_dim,
        "examples": len(data),
        "dtype": args.dtype,
        "weights": args.weights,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{bits_per_dim:.4f} bits/dim ({nll:.2f} nats per image) on {len(data)} "
            f"{args.split} images of {images.source}"
        )
    return 0


# --- sample -------------------------------------------------------------------------------------
def _sample(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_uint8

    _check_common(args)
    _check_positive("--num", args.num)
    _check_temperatures(args.temperatures)
    run = _open_run(args)
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
    for temperature in args.temperatures or (0.0, 0.5, 0.7, 1.0):
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
    data = _run_images(run, args.data, args.split)
    _check_indices("--first", args.first, data)
    _check_indices("--second", args.second, data)
    if run.num_classes is not None and data.labels is None:
        raise UsageError(f"the model is class-conditional but {data.source} has no labels")
    rows = []
    for a, b in zip(args.first, args.second):
        images = _model_inputs(data.images[[a, b]], run.n_bits, args.device)
        labels = None if run.flow.context_shape is None else data.labels[a].to(args.device)
        rows.append(interpolate(run.flow, images[0], images[1], args.steps, context=labels))
    path = Path(args.output) if args.output else run.directory / "interpolation.png"
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
    path = Path(args.output) if args.output else run.directory / "manipulation.png"
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
        help="test set, when --data has no test split (an image folder or tar: all its images)",
    )
    train.add_argument(
        "--test-fraction",
        type=float,
        help="tables: hold out this fraction of --data (seeded by --seed) when there is no "
        "--test-data",
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
        help="sample image grids at given temperatures",
        description="Sample image grids from a trained model, one PNG per temperature.",
    )
    _add_global_options(sample, top=False)
    _add_checkpoint_options(sample)
    sample.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        help="standard deviations of the base noise (Glow's eps_std); default 0 0.5 0.7 1",
    )
    sample.add_argument("--num", type=int, default=64, help="images per grid (default 64)")
    sample.add_argument(
        "--label", type=int, help="class-conditional models: sample this class only"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--output", help="output directory (default: samples/ in the checkpoint's directory)"
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
        "--output", help="output PNG (default: interpolation.png in the checkpoint's directory)"
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
        "--output", help="output PNG (default: manipulation.png in the checkpoint's directory)"
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


def _library_class(name: str) -> type | None:
    """An exception class of flowkit's training API by name, where this version defines it."""
    import flowkit.train

    return getattr(flowkit.train, name, None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` command.

    Every error ends the command with one line on stderr, ``flowkit: error: ...`` (a traceback
    only with ``--debug``) and a status: 2 for a value the command line does not allow (argparse's
    own errors included), 1 for a failure while running, 130 for Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    try:
        from flowkit.performance import tune_allocator

        tune_allocator()
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
