"""The README's python example runs as written, and its first lines give the two commands."""

from pathlib import Path

from tests.test_docs import python_fences

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    namespace: dict = {}
    fences = python_fences(README.read_text(encoding="utf-8"))
    assert fences, "the README has no python example"
    for line, source in fences:
        exec(compile(source, f"{README}:{line}", "exec"), namespace)


def test_readme_starts_with_the_main_job_and_the_test_command():
    lines = README.read_text(encoding="utf-8").splitlines()
    commands = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert "flowkit train --preset glow-small" in commands[0]
    assert commands[1].endswith("python3 -m pytest -n 2")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == "python3 -m pytest -n 2"
