"""What the parsers of the ``flowkit`` commands share: the help format and common options."""

from __future__ import annotations

import argparse

from flowkit._version import __version__

__all__ = [
    "HelpFormatter",
    "add_checkpoint_options",
    "add_data_options",
    "add_global_options",
    "add_overwrite_option",
]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, so ``--help`` tells what a run will use."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return self._help_without_default(action, text)
        value = action.default
        if isinstance(value, (list, tuple)):
            value = " ".join(str(item) for item in value)
        return f"{text} (default: {str(value).replace('%', '%%')})"

    def _help_without_default(self, action: argparse.Action, text: str) -> str:
        """The help of an option whose value, when not given, is decided later (``None``)."""
        return text


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the command name (the command's copy never resets them)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the full traceback of an error (default: off)",
    )
    if top:
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
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


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (written whole or not at all)",
    )


def add_data_options(
    parser: argparse.ArgumentParser, splits: tuple[str, ...] = ("train", "test")
) -> None:
    parser.add_argument(
        "--data", help="dataset to read (default: the one the model was trained on)"
    )
    parser.add_argument("--split", choices=splits, default="test", help="which split of the data")
