"""The argument parser of the ``flowkit`` command."""

from __future__ import annotations

import argparse
from typing import Any

from flowkit._version import __version__
from flowkit.cli._outputs import (
    interpolate_command,
    manipulate_command,
    presets_command,
    sample_command,
)
from flowkit.cli._runs import eval_command
from flowkit.cli._train import train_command

__all__: list[str] = []


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
    }
)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, so ``--help`` tells what a run will use."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.dest in _TRAIN_FIELDS and action.default is None:
            return f"{text} (default: from the preset or --config, else {_train_default(action)})"
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        value = action.default
        if isinstance(value, (list, tuple)):
            value = " ".join(str(item) for item in value)
        return f"{text} (default: {str(value).replace('%', '%%')})"


def _train_default(action: argparse.Action) -> str:
    # Imported only to show help: flowkit.train brings in torch, a second at start-up.
    from flowkit.train.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    if action.dest not in fields:
        return "unset"
    value = fields[action.dest].default
    return "none" if value is None else str(value).replace("%", "%%")


SET_HELP = (
    "override one setting, as section.name=value with section 'model' (the preset's model "
    "config) or 'train' (TrainConfig); the value is read as JSON when it parses (numbers, "
    "true/false, null, lists), else as a string; a single number is accepted where a list is "
    "expected. Repeatable. Example: --set model.K=8 --set train.lr=0.0005 (default: no "
    "overrides)"
)


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the command name (the command's copy never resets them)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the full traceback of an error (default: off)",
    )
    if top:
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt written by 'flowkit train'")
    parser.add_argument(
        "--weights",
        choices=("best", "averaged", "raw"),
        default="best",
        help="best: the weights of the best validation evaluation (runs with a validation set, "
        "such as the table presets'; otherwise as averaged); averaged: the last Polyak average "
        "(the raw weights if the run kept none); raw: the last optimised ones (default: best)",
    )
    parser.add_argument(
        "--device", default="cpu", help="device to run on: cpu, cuda or cuda:N (default: cpu)"
    )


def _add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (written whole or not at all)",
    )


def _add_data_options(
    parser: argparse.ArgumentParser, splits: tuple[str, ...] = ("train", "test")
) -> None:
    parser.add_argument(
        "--data", help="dataset to read (default: the one the model was trained on)"
    )
    parser.add_argument("--split", choices=splits, default="test", help="which split of the data")


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        help="train a model",
        description="Train a model. Settings come from --preset, then --config, then the options "
        "below, then --set overrides. Run under torchrun for several processes (DDP). Writes "
        "config.json, checkpoint.pt, metrics.jsonl, a learning curve and samples to the output "
        "directory.",
    )
    _add_global_options(train, top=False)
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
    train.add_argument(
        "--data",
        help="dataset: fashion-mnist-small (bundled) or a path. Images: a CIFAR-10/100 python "
        "folder or its .tar.gz, a folder of MNIST-style idx files (gzipped or not), a folder of "
        "downsampled ImageNet .npz batches, an image folder or tar (with train/ and test/ "
        "folders, or whole). Tables, for --preset nsf, maf or realnvp-tabular: a .csv file with "
        "a header row, a .npy array or a .npz archive",
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
    train.add_argument("--set", action="append", metavar="SECTION.NAME=VALUE", help=SET_HELP)
    train.set_defaults(handler=train_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowkit`` command."""
    parser = argparse.ArgumentParser(
        prog="flowkit",
        formatter_class=_HelpFormatter,
        description="Train normalizing flows (Glow and the other presets) and use trained ones.",
        epilog="At start-up every command keeps large tensors on the C heap instead of mapping "
        "and unmapping them at each step (flowkit.performance.tune_allocator(); glibc only; "
        "MALLOC_MMAP_MAX_ and MALLOC_TRIM_THRESHOLD_ set in the environment take precedence).",
    )
    _add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)

    evaluate = commands.add_parser(
        "eval",
        formatter_class=_HelpFormatter,
        help="negative log-likelihood (and bits/dim) of a trained model on a dataset",
        description="Evaluate the mean negative log-likelihood, and bits per dimension for "
        "images, with fixed dequantisation noise; the result does not depend on the batch size.",
    )
    _add_global_options(evaluate, top=False)
    _add_checkpoint_options(evaluate)
    _add_data_options(evaluate, ("train", "validation", "test"))
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

    sample = commands.add_parser(
        "sample",
        formatter_class=_HelpFormatter,
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
    _add_overwrite_option(sample)
    sample.set_defaults(handler=sample_command)

    interp = commands.add_parser(
        "interpolate",
        formatter_class=_HelpFormatter,
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
    interp.add_argument("--steps", type=int, default=8, help="points per row, ends included")
    interp.add_argument(
        "--output", help="output PNG (default: samples/interpolation.png in the run directory)"
    )
    _add_overwrite_option(interp)
    interp.set_defaults(handler=interpolate_command)

    manip = commands.add_parser(
        "manipulate",
        formatter_class=_HelpFormatter,
        help="move images along an attribute direction",
        description="Compute the attribute direction as the mean latent of images with the label "
        "minus the mean latent of the others (Glow section 6; class labels serve as attributes) "
        "and move images along it.",
    )
    _add_global_options(manip, top=False)
    _add_checkpoint_options(manip)
    _add_data_options(manip)
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
    _add_overwrite_option(manip)
    manip.set_defaults(handler=manipulate_command)

    presets = commands.add_parser(
        "presets",
        formatter_class=_HelpFormatter,
        help="list the named presets",
        description="List the named training presets and where their settings come from.",
    )
    _add_global_options(presets, top=False)
    presets.set_defaults(handler=presets_command)
    return parser
