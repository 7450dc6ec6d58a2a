"""The ``flowkit`` command: train, eval, sample, interpolate, manipulate, presets."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from flowkit.cli import eval as evaluate
from flowkit.cli import latent, presets, sample, train
from flowkit.cli._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    UsageError,
    one_line,
)
from flowkit.cli._parser import HelpFormatter, add_global_options
from flowkit.cli._settings import resolve_configs

__all__ = ["CommandError", "UsageError", "build_parser", "main", "resolve_configs"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowkit`` command."""
    parser = argparse.ArgumentParser(
        prog="flowkit",
        formatter_class=HelpFormatter,
        description="Train normalizing flows (Glow and the other presets) and use trained ones.",
        epilog="At start-up every command keeps large tensors on the C heap instead of mapping "
        "and unmapping them at each step (flowkit.performance.tune_allocator(); glibc only; "
        "MALLOC_MMAP_MAX_ and MALLOC_TRIM_THRESHOLD_ set in the environment take precedence).",
    )
    add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parser(commands)
    evaluate.add_parser(commands)
    sample.add_parser(commands)
    latent.add_parsers(commands)
    presets.add_parser(commands)
    return parser


def _describe(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception that ended a command."""
    from flowkit.errors import FlowkitError
    from flowkit.presets.registry import PresetError
    from flowkit.train import ConfigError, TrainingInterrupted

    if isinstance(error, TrainingInterrupted):
        return one_line(error), EXIT_INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(error, CommandError):
        return one_line(error), error.status
    # Settings the library rejects once it sees the data (a batch larger than the training set).
    if isinstance(error, (ConfigError, PresetError)):
        return one_line(error), EXIT_USAGE
    if isinstance(error, FlowkitError):
        return one_line(error), EXIT_FAILURE
    if isinstance(error, OSError):
        if error.strerror and error.filename is not None:
            return f"{error.strerror}: {error.filename}", EXIT_FAILURE
        return one_line(error), EXIT_FAILURE
    if isinstance(error, (ValueError, TypeError)):
        return one_line(error), EXIT_FAILURE
    return (
        f"{type(error).__name__}: {one_line(error)} (rerun with --debug for the traceback)",
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
    print(f"flowkit: warning: {one_line(str(message))}", file=sys.stderr)


def _discard_stdout() -> None:
    """Point stdout at the null device: Python's final flush would hit the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by an object without a descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` command.

    Every error ends the command with one line on stderr, ``flowkit: error: ...`` (a traceback
    only with ``--debug``) and a status: 2 for a value the command line does not allow (argparse's
    own errors included), 1 for a failure while running, 130 for Ctrl-C. A reader that stops
    early (``flowkit presets | head``) ends the command quietly with status 141, as a shell
    reports a process ended by SIGPIPE.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            status = int(args.handler(args) or 0)
            # Flushed here, so that a closed pipe is seen now and not at interpreter exit.
            sys.stdout.flush()
            return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except (Exception, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc()
        message, status = _describe(error)
        prefix = "flowkit: " if status == EXIT_INTERRUPTED else "flowkit: error: "
        print(prefix + message, file=sys.stderr)
        return status
