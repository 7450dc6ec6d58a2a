"""The dependency arrows point down: importing a layer loads none of the layers above it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each package, and the packages above it that it must never import (DESIGN.md, "Layout").
ABOVE = {
    "flowkit.nn": [
        "flowkit.bijectors",
        "flowkit.distributions",
        "flowkit.presets",
        "flowkit.train",
    ],
    "flowkit.bijectors": ["flowkit.distributions", "flowkit.presets", "flowkit.train"],
    "flowkit.distributions": ["flowkit.presets", "flowkit.train", "flowkit.cli"],
    "flowkit.train": ["flowkit.presets", "flowkit.cli"],
}

LOADED = """
import importlib, json, sys
importlib.import_module({package!r})
print(json.dumps(sorted(name for name in sys.modules if name.startswith("flowkit."))))
"""


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_package_loads_nothing_above_it(package: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", LOADED.format(package=package)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    loaded = json.loads(completed.stdout)
    assert package in loaded
    above = [
        name
        for name in loaded
        if any(name.startswith(f"{top}.") or name == top for top in ABOVE[package])
    ]
    assert not above, f"importing {package} loads {above}"
