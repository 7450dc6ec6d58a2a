"""``flowkit train``'s settings: preset, config file, options and --set overrides, merged."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from flowkit.cli._common import CommandError, UsageError, check_device, one_line

__all__: list[str] = []


# Keys of a run's config.json that record the run rather than set it; ignored on input.
_RECORD_KEYS = frozenset({"data", "versions", "started"})


# Keys of config.json that choose the data of a run; the options of the same names override them.
INPUT_KEYS = ("test_data", "test_fraction", "columns", "context_columns")


# The option that sets each train setting; settings without one are named as train.NAME (--set).
TRAIN_OPTIONS = {
    "data": "--data",
    "output": "--output",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "max_minutes": "--max-minutes",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "beta2": "--beta2",
    "weight_decay": "--weight-decay",
    "warmup_steps": "--warmup-steps",
    "lr_decay": "--lr-decay",
    "min_lr_ratio": "--min-lr-ratio",
    "augment_shift": "--augment-shift",
    "augment_flip": "--augment-flip",
    "device": "--device",
    "seed": "--seed",
    "val_fraction": "--val-fraction",
    "patience": "--patience",
    "precision": "--precision",
    "grad_accumulation": "--grad-accumulation",
    "compile": "--compile",
    "tensorboard": "--tensorboard",
    "progress": "--no-progress",
}


# Settings that only mean something for images (augmentation, padding; and the image model's bits,
# BITS) ...
IMAGE_ONLY = ("augment_shift", "augment_flip", "pad")


# How messages name the image model's bits per value, whichever source set them.
BITS = "--n-bits (model.n_bits)"


# ... and for tables (the validation split and early stopping of the tabular protocol).
TABLE_ONLY = ("val_fraction", "patience")


# Settings checked alone need a companion that admits them; the pair is checked together later.
_COMPANIONS: dict[str, dict[str, Any]] = {"weight_decay": {"optimizer": "adamw"}}


# Table presets, suggested when a table is given to an image model (every run preset of a vector
# model family; tests/cli check the list against the registry).
TABLE_PRESETS = "nsf|maf|realnvp-tabular|naf|umnn|resflow|ncsf|cnf"


@dataclasses.dataclass
class Settings:
    """Everything ``flowkit train`` was told, merged: preset, config file, options, --set.

    ``given`` holds the train settings named by an option or ``--set`` (a config file's settings
    count where they differ from TrainConfig's defaults, since a run's config.json lists them all).
    """

    preset: str | None
    model_name: str
    model: dict[str, Any]
    train: dict[str, Any]
    inputs: dict[str, Any]
    given: frozenset[str] = frozenset()
    # The image model's bits per value (its Dequantized's), or None for the model's default.
    n_bits: Any = None


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"no config file at {file}")
    text = file.read_text()
    if file.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib

            content = tomllib.loads(text)
        else:
            raise UsageError("TOML config files need Python 3.11+; use JSON")
    else:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise UsageError(f"{file} must hold an object with 'preset', 'model' and 'train' sections")
    allowed = {"preset", "model_name", "model", "train", *INPUT_KEYS}
    unknown = set(content) - allowed - _RECORD_KEYS
    if unknown:
        raise UsageError(
            f"{file} has unknown sections {sorted(unknown)}; expected some of {sorted(allowed)}"
        )
    for section in ("model", "train"):
        if not isinstance(content.get(section) or {}, dict):
            raise UsageError(f"{file}: the {section!r} section must be an object")
    record = content.get("data")
    if isinstance(record, dict) and "n_bits" in record:
        # A run's config.json records the image model's bits with its data (its model section
        # holds them only where the family's config does).
        content["model"] = {"n_bits": record["n_bits"], **(content.get("model") or {})}
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


def _normalized(config_class: type, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with lists as tuples; unknown settings named."""
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
    return values


def fill(config_class: type, section: str, values: dict[str, Any]) -> Any:
    """``config_class(**values)``, naming unknown settings and turning lists into tuples."""
    values = _normalized(config_class, section, values)
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(one_line(error)) from None


def read_settings(args: argparse.Namespace) -> Settings:
    """Merge preset, config file, explicit options and --set overrides, in that order."""
    file_content = _read_config_file(args.config) if args.config else {}
    file_train = file_content.get("train") or {}
    preset_name, model_name, model, train = _preset_and_file(args.preset, file_content)
    _replace_warmup(train, set(file_train))
    defaults = _train_defaults()
    given = {
        name
        for name, value in file_train.items()
        if name not in defaults or defaults[name] != value
    }
    explicit = _explicit_options(args)
    train.update(explicit)
    given.update(explicit)
    _apply_switches(args, model_name, model, train, given)
    told = set(explicit)
    for text in args.set or []:
        section, name, value = _parse_override(text)
        (model if section == "model" else train)[name] = value
        if section == "train":
            given.add(name)
            told.add(name)
    _replace_warmup(train, told)
    inputs = {key: file_content.get(key) for key in INPUT_KEYS}
    for key in INPUT_KEYS:
        if getattr(args, key) is not None:
            inputs[key] = getattr(args, key)
    _resolve_paths(train, inputs)
    # The bits per value are the image model's; train.n_bits (which --n-bits sets) is their
    # earlier spelling and wins over model.n_bits.
    n_bits = train.pop("n_bits", model.pop("n_bits", None))
    given.discard("n_bits")
    return Settings(preset_name, model_name, model, train, inputs, frozenset(given), n_bits)


def _preset_and_file(
    preset_option: str | None, file_content: dict[str, Any]
) -> tuple[str | None, str, dict[str, Any], dict[str, Any]]:
    """The preset's name, the model family, and its model and train settings, the file's on top."""
    from flowkit.presets.runs import get_run_preset

    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    preset_name = preset_option or file_content.get("preset")
    model_name = file_content.get("model_name") or "glow"
    if preset_name:
        try:
            preset = get_run_preset(preset_name)
        except ValueError as error:
            raise UsageError(one_line(error)) from None
        model.update(preset.model)
        train.update(preset.train)
        model_name = preset.model_name
    model.update(file_content.get("model") or {})
    train.update(file_content.get("train") or {})
    return preset_name, model_name, model, train


def _explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The train settings given as options (those left out are absent)."""
    explicit = {
        "data": args.data,
        "output": args.output,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "beta2": args.beta2,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "lr_decay": args.lr_decay,
        "min_lr_ratio": args.min_lr_ratio,
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "device": args.device,
        "seed": args.seed,
        "n_bits": args.n_bits,
        "augment_shift": args.augment_shift,
        "val_fraction": getattr(args, "val_fraction", None),
        "patience": getattr(args, "patience", None),
        "precision": getattr(args, "precision", None),
        "grad_accumulation": getattr(args, "grad_accumulation", None),
        "compile": True if getattr(args, "compile", False) else None,
    }
    return {name: value for name, value in explicit.items() if value is not None}


def _apply_switches(
    args: argparse.Namespace,
    model_name: str,
    model: dict[str, Any],
    train: dict[str, Any],
    given: set[str],
) -> None:
    """The on/off options, applied to the model and train settings in place."""
    if args.no_augment:
        if args.augment_flip:
            raise UsageError("--no-augment and --augment-flip contradict each other")
        train.update(augment_shift=0.0, augment_flip=False, noise_std=0.0)
        if _owns_noise(model_entry(model_name)):
            model["noise_std"] = 0.0
    if args.augment_flip:
        train["augment_flip"] = True
        given.add("augment_flip")
    if args.num_classes is not None:
        model["num_classes"] = args.num_classes
    if args.memory_saving:
        model["memory_saving"] = True
    if args.no_progress:
        train["progress"] = False
    if args.tensorboard:
        train["tensorboard"] = True


def _replace_warmup(train: dict[str, Any], named: set[str]) -> None:
    """A warm-up ``named`` in steps replaces one in epochs from an earlier source, and back."""
    for name, other in (("warmup_steps", "warmup_epochs"), ("warmup_epochs", "warmup_steps")):
        if name in named and other not in named:
            train.pop(other, None)


def _train_defaults() -> dict[str, Any]:
    from flowkit.train.config import TrainConfig

    return {field.name: field.default for field in dataclasses.fields(TrainConfig)}


def _resolve_paths(train: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Paths made absolute, so that the run's config.json repeats it from any directory."""
    for values, key in ((train, "data"), (inputs, "test_data")):
        value = values.get(key)
        # A bundled dataset's name stays a name; only what exists on disk is a path.
        if isinstance(value, str) and value.strip() and Path(value).expanduser().exists():
            values[key] = str(Path(value).expanduser().resolve())
    output = train.get("output", _train_defaults()["output"])
    if isinstance(output, str) and output.strip():
        train["output"] = str(Path(output).expanduser().resolve())


def option_name(name: str) -> str:
    """How ``--help`` names a train setting: its option (and the setting), or train.NAME."""
    flag = TRAIN_OPTIONS.get(name)
    return f"train.{name}" if flag is None else f"{flag} (train.{name})"


def check_settings(settings: Settings, entry: Any) -> None:
    """Check every merged value once, naming it the same way whichever source set it.

    The value checks are TrainConfig's own, one setting at a time, so the message names the
    option; then settings that mean nothing for the model's kind of data are refused.
    """
    _check_train_values(settings.train)
    _check_inputs(settings.inputs)
    check_device(settings.train.get("device"), auto=True)
    _check_noise(settings, entry)
    if entry.kind == "vector":
        _refuse(
            settings, IMAGE_ONLY, f"is for images, but the {entry.name} model trains on a table"
        )
        if settings.n_bits is not None:
            raise UsageError(
                f"{BITS} is for images, but the {entry.name} model trains on a table (got "
                f"{settings.n_bits!r}); leave it out"
            )
    else:
        _check_bits(settings.n_bits)
        _check_image_data(settings, entry)
        _refuse(settings, TABLE_ONLY, f"is for tables, but the {entry.name} model trains on images")
        for key in ("columns", "context_columns"):
            if settings.inputs.get(key) is not None:
                raise UsageError(
                    f"--{key.replace('_', '-')} is for tables, but the {entry.name} model trains "
                    "on images; leave it out"
                )


def _check_train_values(train: dict[str, Any]) -> None:
    """TrainConfig's check of each train setting alone, the message naming its option."""
    from flowkit.train.config import ConfigError, TrainConfig

    for name, value in _normalized(TrainConfig, "train", train).items():
        try:
            TrainConfig(**{name: value, **_COMPANIONS.get(name, {})})
        except ConfigError as error:
            message = one_line(error)
            _, found, rest = message.partition(f" expects {name} as ")
            named = option_name(name)
            raise UsageError(
                f"{named} expects {rest}" if found else f"{named}: {message}"
            ) from None


def _check_inputs(inputs: dict[str, Any]) -> None:
    """The test fraction and the column names, whichever source gave them."""
    fraction = inputs.get("test_fraction")
    if fraction is not None and not (
        isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction < 1
    ):
        raise UsageError(
            f"--test-fraction expects a fraction between 0 and 1 (exclusive), got {fraction!r}"
        )
    for key in ("columns", "context_columns"):
        names = inputs.get(key)
        flag = "--" + key.replace("_", "-")
        if names is None:
            continue
        if isinstance(names, str) or not all(isinstance(name, str) for name in names):
            raise UsageError(f"{flag} expects a list of column names, got {names!r}")
        if any(not name.strip() for name in names):
            raise UsageError(f"{flag} expects column names, got an empty one")


def _owns_noise(entry: Any) -> bool:
    """Whether the model family trains with noise of its own (TarFlow: it denoises with it)."""
    return "noise_std" in {field.name for field in dataclasses.fields(entry.config_class)}


def _check_noise(settings: Settings, entry: Any) -> None:
    """A model that owns its training noise takes it from its own setting, never from train."""
    if not _owns_noise(entry):
        return
    value = settings.train.get("noise_std", 0.0)
    default = entry.config_class.__dataclass_fields__["noise_std"].default
    owned = settings.model.get("noise_std", default)
    # Refused even when equal: the model's value is in its own range, train's in flowkit's.
    if "noise_std" in settings.given or value != 0.0:
        raise UsageError(
            f"train.noise_std={value} is set beside model.noise_std={owned}: the {entry.name} "
            f"model trains with its own noise (in its own range) and removes it from its "
            f"samples; set model.noise_std instead (--set model.noise_std={value})"
        )


def _refuse(settings: Settings, names: tuple[str, ...], reason: str) -> None:
    defaults = _train_defaults()
    for name in names:
        if name not in settings.train:
            continue
        value = settings.train[name]
        if name in settings.given or value != defaults.get(name):
            raise UsageError(f"{option_name(name)} {reason} (got {value!r}); leave it out")


def _check_bits(value: Any) -> None:
    """The model's own check of its bits, for the 8-bit images the command line reads."""
    from flowkit.distributions.dequantized import check_bits

    if value is None:
        return
    try:
        check_bits("Dequantized", value, image_bits=8)
    except (TypeError, ValueError) as error:
        _, found, rest = one_line(error).partition(" expects n_bits as ")
        raise UsageError(f"{BITS} expects {rest}" if found else f"{BITS}: {error}") from None


def _check_image_data(settings: Settings, entry: Any) -> None:
    """A table given to an image model is one line pointing at the table presets."""
    for key, flag in (("data", "--data"), ("test_data", "--test-data")):
        value = settings.train.get(key) if key == "data" else settings.inputs.get(key)
        if isinstance(value, str) and is_table_file(Path(value)):
            model = (
                f"the preset {settings.preset} trains {entry.name} on images"
                if settings.preset
                else f"without --preset the model is {entry.name}, which trains on images"
            )
            raise UsageError(
                f"{flag} {value} is a table, but {model}; for a table choose --preset "
                f"{TABLE_PRESETS}"
            )


def is_table_file(path: Path) -> bool:
    """Whether ``path`` is a table (.csv, .npy, or an .npz that is not downsampled ImageNet)."""
    from flowkit.data.tables import TABLE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES or path.is_dir():
        return False
    if suffix != ".npz" or not path.is_file():
        return True
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            members = set(archive.files)
    except (OSError, ValueError):
        return False  # not readable as npz: the image readers give the error
    # Downsampled ImageNet batches hold images as 'data' and their classes as 'labels'.
    return not {"data", "labels"} <= members


def model_entry(name: str) -> Any:
    from flowkit.presets.registry import get_model

    try:
        return get_model(name)
    except ValueError as error:
        raise UsageError(one_line(error)) from None


def model_config_of(settings: Settings, entry: Any, **from_data: Any) -> Any:
    """The model family's config; ``from_data`` (features, ...) must agree with any setting."""
    values = dict(settings.model)
    if settings.n_bits is not None and "n_bits" in entry.config_class.__dataclass_fields__:
        values["n_bits"] = settings.n_bits
    for name, value in from_data.items():
        if values.get(name, value) != value:
            raise UsageError(
                f"model.{name} is set by the data to {value}, got {values[name]}; leave it out"
            )
        values[name] = value
    return fill(entry.config_class, "model", values)


def build_image_model(settings: Settings, entry: Any, model_config: Any) -> Any:
    """The family's model as a distribution over integer images of the settings' bits."""
    from flowkit.distributions import Dequantized

    model = entry.build(model_config)
    if settings.n_bits is None or isinstance(model, Dequantized):
        return model  # a family whose config holds the bits has built them in
    return Dequantized(model, settings.n_bits)


def model_settings(settings: Settings, model_config: Any) -> dict[str, Any]:
    """The model's settings as --print-config shows them: its config and the image bits."""
    values = dataclasses.asdict(model_config)
    if settings.n_bits is not None:
        values.setdefault("n_bits", settings.n_bits)
    return values


def resolve_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model config and :class:`~flowkit.train.TrainConfig` of an image run's options."""
    from flowkit.train.config import TrainConfig

    settings = read_settings(args)
    entry = model_entry(settings.model_name)
    check_settings(settings, entry)
    model_config = model_config_of(settings, entry)
    return model_config, fill(TrainConfig, "train", settings.train)
