import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_is_listed():
    assert set(SCRIPTS) == {
        "attribute_manipulation.py",
        "class_conditional.py",
        "interpolation.py",
        "temperature_sweep.py",
        "train_cifar10.py",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_in_quick_mode(script):
    completed = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "wrote" in completed.stdout or "test bits/dim" in completed.stdout
