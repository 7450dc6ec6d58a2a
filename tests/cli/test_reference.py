"""docs/cli.md documents exactly the options the parser has."""

from __future__ import annotations

import argparse
import re

import pytest

from flowkit.cli import build_parser
from tests.cli.conftest import ROOT

PAGE = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def section(command: str) -> str:
    start = PAGE.index(f"## `flowkit {command}")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start : end if end != -1 else len(PAGE)]


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_option_is_documented_in_its_section(command):
    text = section(command)
    common = {"-h", "--help", "--debug"}
    missing = sorted(flag for flag in options(subcommands()[command]) - common if flag not in text)
    assert not missing, f"docs/cli.md's flowkit {command} section lacks {missing}"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_documented_option_exists(command):
    known = options(subcommands()[command]) | options(build_parser())
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", section(command)))
    unknown = sorted(documented - known)
    assert not unknown, f"docs/cli.md documents {unknown} that flowkit {command} does not have"
