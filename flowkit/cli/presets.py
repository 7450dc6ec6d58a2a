"""``flowkit presets``: the named training presets."""

from __future__ import annotations

import argparse
from typing import Any

from flowkit.cli._parser import HelpFormatter, add_global_options

__all__ = ["add_parser", "presets_command"]


def add_parser(commands: Any) -> None:
    """Add ``flowkit presets`` to the commands of the top-level parser."""
    presets = commands.add_parser(
        "presets",
        formatter_class=HelpFormatter,
        help="list the named presets",
        description="List the named training presets and where their settings come from.",
    )
    add_global_options(presets, top=False)
    presets.set_defaults(handler=presets_command)


def presets_command(args: argparse.Namespace) -> int:
    """List the named run presets and their sources."""
    from flowkit.presets.runs import RUN_PRESETS, augmentation_of

    for name, preset in sorted(RUN_PRESETS.items()):
        print(
            f"{name:18s} {preset.description}\n{'':18s} source: {preset.source}\n"
            f"{'':18s} augmentation: {augmentation_of(preset)}"
        )
    return 0
