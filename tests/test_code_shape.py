"""The shape of flowkit's code: no function body longer than ``MAX_LINES`` lines of code.

Complexity is ruff's (C901, ``max-complexity`` in pyproject.toml); length is checked here, since
ruff has no rule that counts a function's lines of code.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowkit"

# Lines of code in one function's body: docstring, blank lines and comment-only lines aside.
MAX_LINES = 60


def _has_docstring(body: list[ast.stmt]) -> bool:
    first = body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines of code)`` of every function defined in ``source``."""
    lines = source.splitlines()
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    body = child.body[1:] if _has_docstring(child.body) else child.body
                    count = 0
                    if body:
                        end = child.end_lineno or child.lineno
                        code = (line.strip() for line in lines[body[0].lineno - 1 : end])
                        count = sum(1 for line in code if line and not line.startswith("#"))
                    found.append((name, child.lineno, count))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_count_leaves_out_the_docstring_blank_lines_and_comments() -> None:
    statements = "\n".join(f"    x{i} = {i}  # a trailing comment counts" for i in range(3))
    source = textwrap.dedent('''
        class Model:
            def method(self):
                """A docstring
                of three lines.
                """

                # a comment on its own line
        ''') + textwrap.indent(statements + "\n\n    return x0\n", "    ")
    assert function_lengths(source) == [("Model.method", 3, 4)]


def test_a_nested_function_counts_alone_and_in_the_function_around_it() -> None:
    source = "def outer():\n    def inner():\n        return 1\n\n    return inner\n"
    assert function_lengths(source) == [("outer", 1, 3), ("outer.inner", 2, 1)]


def test_no_function_in_flowkit_is_longer_than_the_limit() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no Python files under {PACKAGE}"
    too_long = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({count} lines)"
        for path in files
        for name, line, count in function_lengths(path.read_text())
        if count > MAX_LINES
    ]
    assert not too_long, f"functions over {MAX_LINES} lines of code:\n" + "\n".join(too_long)
