"""``flowkit train``'s settings: preset, config file, options and --set overrides, merged."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from flowkit.cli._common import CommandError, UsageError, one_line

__all__: list[str] = []


# Keys of a run's config.json that record the run rather than set it; ignored on input.
_RECORD_KEYS = frozenset({"data", "versions", "started"})


# Keys of config.json that choose the data of a run; the options of the same names override them.
INPUT_KEYS = ("test_data", "test_fraction", "columns", "context_columns")


@dataclasses.dataclass
class Settings:
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


def fill(config_class: type, section: str, values: dict[str, Any]) -> Any:
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
        raise UsageError(one_line(error)) from None


def read_settings(args: argparse.Namespace) -> Settings:
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
            raise UsageError(one_line(error)) from None
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
        "augment_shift": args.augment_shift,
    }
    train.update({k: v for k, v in explicit.items() if v is not None})
    if args.no_augment:
        if args.augment_flip:
            raise UsageError("--no-augment and --augment-flip contradict each other")
        train.update(augment_shift=0.0, augment_flip=False, noise_std=0.0)
    if args.augment_flip:
        train["augment_flip"] = True
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
    inputs = {key: file_content.get(key) for key in INPUT_KEYS}
    for key in INPUT_KEYS:
        if getattr(args, key) is not None:
            inputs[key] = getattr(args, key)
    return Settings(preset_name, model_name, model, train, inputs)


def model_entry(name: str) -> Any:
    from flowkit.presets.registry import get_model

    try:
        return get_model(name)
    except ValueError as error:
        raise UsageError(one_line(error)) from None


def model_config_of(settings: Settings, entry: Any, **from_data: Any) -> Any:
    """The model family's config; ``from_data`` (features, ...) must agree with any setting."""
    values = dict(settings.model)
    for name, value in from_data.items():
        if values.get(name, value) != value:
            raise UsageError(
                f"model.{name} is set by the data to {value}, got {values[name]}; leave it out"
            )
        values[name] = value
    return fill(entry.config_class, "model", values)


def resolve_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model config and :class:`~flowkit.train.TrainConfig` of an image run's options."""
    from flowkit.train.config import TrainConfig

    settings = read_settings(args)
    model_config = model_config_of(settings, model_entry(settings.model_name))
    return model_config, fill(TrainConfig, "train", settings.train)
