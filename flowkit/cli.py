"""The ``flowkit`` command: train, eval, sample, interpolate, manipulate, presets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit import __version__

__all__ = ["build_parser", "main"]

SET_HELP = (
    "override one setting, as section.name=value with section 'model' (GlowConfig) or 'train' "
    "(TrainConfig); the value is read as JSON when it parses (numbers, true/false, null, lists), "
    "else as a string. Repeatable. Example: --set model.K=8 --set train.lr=0.0005"
)


# --- configuration ------------------------------------------------------------------------------
def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"flowkit: no config file at {file}")
    text = file.read_text()
    if file.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            raise SystemExit("flowkit: TOML config files need Python 3.11+; use JSON") from None
        content = tomllib.loads(text)
    else:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise SystemExit(f"flowkit: {file} is not valid JSON: {error}") from None
    unknown = set(content) - {"preset", "model", "train"}
    if unknown:
        raise SystemExit(
            f"flowkit: {file} has unknown sections {sorted(unknown)}; expected 'preset', 'model', 'train'"
        )
    return content


def _parse_override(text: str) -> tuple[str, str, Any]:
    key, separator, raw = text.partition("=")
    section, dot, name = key.partition(".")
    if not separator or not dot or section not in ("model", "train") or not name:
        raise SystemExit(
            f"flowkit: --set expects section.name=value with section model or train, got {text!r}"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, name, value


def resolve_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """Merge preset, config file, explicit options and --set overrides, in that order."""
    from flowkit.presets.glow import GlowConfig
    from flowkit.presets.runs import get_run_preset
    from flowkit.train.config import TrainConfig

    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    file_content = _read_config_file(args.config) if args.config else {}
    preset_name = args.preset or file_content.get("preset")
    if preset_name:
        try:
            preset = get_run_preset(preset_name)
        except ValueError as error:
            raise SystemExit(f"flowkit: {error}") from None
        sections["model"].update(preset.model)
        sections["train"].update(preset.train)
    for section in ("model", "train"):
        sections[section].update(file_content.get(section, {}))
    explicit = {
        "data": args.data,
        "output": args.output,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_steps": args.max_steps,
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
    for section, config_class in (("model", GlowConfig), ("train", TrainConfig)):
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = set(sections[section]) - known
        if unknown:
            raise SystemExit(
                f"flowkit: unknown {section} setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
    if "input_shape" in sections["model"]:
        sections["model"]["input_shape"] = tuple(sections["model"]["input_shape"])
    if "temperatures" in sections["train"]:
        sections["train"]["temperatures"] = tuple(sections["train"]["temperatures"])
    try:
        return GlowConfig(**sections["model"]), TrainConfig(**sections["train"])
    except (TypeError, ValueError) as error:
        raise SystemExit(f"flowkit: {error}") from None


# --- commands -----------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from flowkit.presets.glow import build_glow, config_dict
    from flowkit.train import Trainer
    from flowkit.train.data import load_image_splits

    model_config, train_config = resolve_configs(args)
    train_data, test_data = load_image_splits(train_config, num_classes=model_config.num_classes)
    flow = build_glow(model_config)
    trainer = Trainer(
        flow, train_config, train_data, test_data, model_config=config_dict(model_config)
    )
    result = trainer.fit(resume=args.resume)
    if trainer.process.is_main:
        start = result.test_bpd[0][1] if result.test_bpd else float("nan")
        print(
            f"trained {result.steps} steps; test bits/dim {start:.4f} at the start, "
            f"{result.final_test_bpd:.4f} at the end; outputs in {result.output}"
        )
    return 0


def _load(args: argparse.Namespace):
    from flowkit import load_flow

    flow, state = load_flow(args.checkpoint, weights=args.weights, map_location=args.device)
    return flow, state


def _eval(args: argparse.Namespace) -> int:
    import torch

    from flowkit.train.config import TrainConfig
    from flowkit.train.data import as_training_data, load_image_splits
    from flowkit.train.distributed import Process

    flow, state = _load(args)
    train_config = TrainConfig(
        **{**state["train_config"], "temperatures": tuple(state["train_config"]["temperatures"])}
    )
    if args.data:
        train_config = dataclasses.replace(train_config, data=args.data)
    if args.num_test is not None:
        train_config = dataclasses.replace(train_config, num_test=args.num_test)
    num_classes = getattr(flow.config, "num_classes", None)
    train_data, test_data = load_image_splits(train_config, num_classes=num_classes)
    data = as_training_data(
        test_data if args.split == "test" else train_data,
        train_config.n_bits,
        train_config.num_test if args.split == "test" else train_config.num_train,
    )
    data.check_against(flow, args.split)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    flow = flow.to(dtype)
    process = Process(device=torch.device(args.device))
    with torch.no_grad():
        bpd = data.evaluate(flow, args.batch_size, process, dtype=dtype)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "split": args.split,
                "bits_per_dim": bpd,
                "examples": len(data),
                "dtype": args.dtype,
                "weights": args.weights,
            }
        )
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_uint8

    flow, state = _load(args)
    n_bits = state["train_config"]["n_bits"]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    context = None
    if getattr(flow.config, "num_classes", None) is not None:
        classes = [args.label] if args.label is not None else list(range(flow.config.num_classes))
        context = torch.tensor(
            [classes[i % len(classes)] for i in range(args.num)], device=args.device
        )
    for temperature in args.temperatures:
        torch.manual_seed(args.seed)
        with torch.no_grad():
            images = flow.sample(
                args.num if context is None else None, context=context, temperature=temperature
            )
        images = images.float().cpu()
        bad = ~torch.isfinite(images)
        if bool(bad.any()):
            print(
                f"flowkit: {int(bad.sum())} non-finite sample values at temperature {temperature} "
                "(the inverse overflowed); drawn mid-grey",
                file=sys.stderr,
            )
        path = output / f"samples_t{temperature:.2f}.png"
        save_image_grid(to_uint8(images.masked_fill(bad, 0.0), n_bits), path)
        print(path)
    return 0


def _examples(args: argparse.Namespace, state: dict):
    from flowkit.train.config import TrainConfig
    from flowkit.train.data import load_image_splits

    config = TrainConfig(
        **{**state["train_config"], "temperatures": tuple(state["train_config"]["temperatures"])}
    )
    if args.data:
        config = dataclasses.replace(config, data=args.data)
    train_data, test_data = load_image_splits(config, num_classes=None)
    return (test_data if args.split == "test" else train_data), config.n_bits


def _interpolate(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_model_input, to_uint8
    from flowkit.latent import interpolate

    flow, state = _load(args)
    data, n_bits = _examples(args, state)
    rows = []
    for a, b in zip(args.first, args.second):
        images = (
            to_model_input(data.images[[a, b]], n_bits, dequantize=False).to(args.device)
            + 0.5 / 2**n_bits
        )
        labels = None if flow.context_shape is None else data.labels[a].to(args.device)
        rows.append(interpolate(flow, images[0], images[1], args.steps, context=labels))
    path = Path(args.output)
    save_image_grid(to_uint8(torch.cat(rows).float().cpu(), n_bits), path, nrow=args.steps)
    print(path)
    return 0


def _manipulate(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import save_image_grid, to_model_input, to_uint8
    from flowkit.latent import attribute_direction, manipulate

    flow, state = _load(args)
    data, n_bits = _examples(args, state)
    if data.labels is None:
        raise SystemExit(
            "flowkit: manipulate needs labelled data (class labels serve as attributes)"
        )
    count = min(args.num_reference, data.images.shape[0])
    images = (
        to_model_input(data.images[:count], n_bits, dequantize=False).to(args.device)
        + 0.5 / 2**n_bits
    )
    labels = data.labels[:count]
    context = None if flow.context_shape is None else labels.to(args.device)
    direction = attribute_direction(flow, images, labels == args.attribute, context=context)
    scales = torch.linspace(-args.scale, args.scale, args.steps).tolist()
    rows = [
        manipulate(
            flow,
            images[index],
            direction,
            scales,
            context=None if context is None else context[index],
        )
        for index in args.indices
    ]
    path = Path(args.output)
    save_image_grid(to_uint8(torch.cat(rows).float().cpu(), n_bits), path, nrow=args.steps)
    print(path)
    return 0


def _presets(args: argparse.Namespace) -> int:
    from flowkit.presets.runs import RUN_PRESETS

    for name, preset in sorted(RUN_PRESETS.items()):
        print(f"{name:18s} {preset.description}\n{'':18s} source: {preset.source}")
    return 0


# --- parser -------------------------------------------------------------------------------------
def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt written by 'flowkit train'")
    parser.add_argument(
        "--weights",
        choices=("ema", "raw"),
        default="ema",
        help="use the averaged weights (default; falls back to raw if none) or the raw ones",
    )
    parser.add_argument(
        "--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="dataset to read (default: the one the model was trained on)"
    )
    parser.add_argument(
        "--split", choices=("train", "test"), default="test", help="which split (default: test)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowkit`` command."""
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Train and use Glow models (Kingma & Dhariwal 2018) built from flowkit's bijectors.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a Glow model",
        description="Train a Glow model. Settings come from --preset, then --config, then the options "
        "below, then --set overrides. Run under torchrun for several processes (DDP). Writes "
        "checkpoint.pt, metrics.jsonl, bpd.png and samples/ to the output directory.",
    )
    train.add_argument(
        "--preset", help="named run (see 'flowkit presets'), e.g. glow-small or glow-cifar10"
    )
    train.add_argument(
        "--config",
        help="JSON (or TOML on Python 3.11+) file with 'preset', 'model' and 'train' sections",
    )
    train.add_argument(
        "--data",
        help="dataset: fashion-mnist-small (bundled) or a path (CIFAR batches, idx files, ImageNet npz, image folder or tar)",
    )
    train.add_argument("--output", help="output directory")
    train.add_argument("--epochs", type=int, help="number of epochs")
    train.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
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
        "--tensorboard", action="store_true", help="also write TensorBoard logs (needs tensorboard)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument("--set", action="append", metavar="SECTION.NAME=VALUE", help=SET_HELP)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "eval",
        help="bits/dim of a trained model on a dataset",
        description="Evaluate bits per dimension with fixed dequantisation noise; the result does not depend on the batch size.",
    )
    _add_checkpoint_options(evaluate)
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--batch-size", type=int, default=256, help="evaluation batch size (default 256)"
    )
    evaluate.add_argument("--num-test", type=int, help="evaluate only the first N examples")
    evaluate.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="arithmetic precision"
    )
    evaluate.set_defaults(handler=_eval)

    sample = commands.add_parser(
        "sample",
        help="sample image grids at given temperatures",
        description="Sample image grids from a trained model, one PNG per temperature.",
    )
    _add_checkpoint_options(sample)
    sample.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 0.7, 1.0],
        help="standard deviations of the base noise (Glow's eps_std); default 0 0.5 0.7 1",
    )
    sample.add_argument("--num", type=int, default=64, help="images per grid (default 64)")
    sample.add_argument(
        "--label", type=int, help="class-conditional models: sample this class only"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--output", default="samples", help="output directory (default: samples)")
    sample.set_defaults(handler=_sample)

    interp = commands.add_parser(
        "interpolate",
        help="walk between two images in latent space",
        description="Decode points on the line between the latents of two dataset images; one row per pair.",
    )
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
    interp.add_argument("--output", default="interpolation.png", help="output PNG")
    interp.set_defaults(handler=_interpolate)

    manip = commands.add_parser(
        "manipulate",
        help="move images along an attribute direction",
        description="Compute the attribute direction as the mean latent of images with the label minus the mean latent of the others (Glow section 6; class labels serve as attributes) and move images along it.",
    )
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
    manip.add_argument("--output", default="manipulation.png", help="output PNG")
    manip.set_defaults(handler=_manipulate)

    presets = commands.add_parser(
        "presets",
        help="list the named presets",
        description="List the named training presets and where their settings come from.",
    )
    presets.set_defaults(handler=_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` command."""
    from flowkit.performance import tune_allocator

    args = build_parser().parse_args(argv)
    tune_allocator()
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
