"""The documentation cannot rot: its code runs, and its API pages cover the public API.

Every ``python`` fence of a page in ``docs/`` runs, in order, in one namespace per page, so a page
reads like a script cut into pieces. Output shown to readers goes in ``text`` fences, which do not
run. Tracebacks point at the page's own line numbers.

The pytest-markdown-docs plugin is not used for this. It makes each fence a separate
test in a fresh namespace; sharing state needs a ``continuation`` tag on every later fence, which
Material's fence syntax accepts only if the whole suite switches the plugin's syntax, and each
continued fence re-runs all the fences before it, so a tutorial's training loop would run once
per later fence. Its ``--markdown-docs`` switch also adds a collector for every ``.py`` and ``.md``
file under the test paths, README included when run on the whole tree. Here one page is one test
that runs once.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import types
from pathlib import Path

import pytest

import flowkit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PYTHON_LANGUAGES = {"python", "py", "python3"}

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_DIRECTIVE = re.compile(r"^:::[ \t]+(?P<target>[\w.]+)", re.MULTILINE)


def python_fences(text: str) -> list[tuple[int, str]]:
    """The python fences of a markdown text as ``(line of the first code line, source)``."""
    lines = text.splitlines()
    fences = []
    index = 0
    while index < len(lines):
        opening = _FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, marker = opening["indent"], opening["marker"]
        info = opening["info"].strip().lstrip("{").lstrip(".")
        language = info.split()[0].rstrip("}") if info else ""
        end = index + 1
        while end < len(lines) and not _is_fence_close(lines[end], indent, marker):
            end += 1
        if end == len(lines):
            raise ValueError(f"the fence opened at line {index + 1} is never closed")
        if language in PYTHON_LANGUAGES:
            body = [_dedent(line, indent) for line in lines[index + 1 : end]]
            fences.append((index + 2, "\n".join(body) + "\n"))
        index = end + 1
    return fences


def _dedent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line.lstrip()


def _is_fence_close(line: str, indent: str, marker: str) -> bool:
    stripped = line.strip()
    return line.startswith(indent) and len(stripped) >= len(marker) and set(stripped) == {marker[0]}


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


PAGES_WITH_CODE = [page for page in PAGES if python_fences(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_page_id)
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages that write files (checkpoints, hypothesis' example database) write them here.
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"docs_{_page_id(page).replace('/', '_').replace('-', '_')[:-3]}")
    module.__file__ = str(page)
    # A real module in sys.modules lets classes defined on the page pickle and resolve annotations.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for first_line, source in python_fences(page.read_text(encoding="utf-8")):
        # Padding with blank lines makes tracebacks show the page's own line numbers.
        code = compile("\n" * (first_line - 1) + source, str(page), "exec")
        exec(code, module.__dict__)


def test_pages_that_teach_have_code() -> None:
    # Guards against a page silently dropping out of test_page_code_runs.
    tutorials = sorted((DOCS / "tutorials").glob("*.md"))
    assert tutorials, f"no tutorials in {DOCS / 'tutorials'}"
    teaching = [DOCS / "index.md", DOCS / "concepts.md", *tutorials]
    without_code = [_page_id(page) for page in teaching if page not in PAGES_WITH_CODE]
    assert not without_code, f"pages without python fences: {without_code}"


def test_python_fences_are_found_in_order_with_their_lines() -> None:
    text = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "a = 1",  # 3
            "```",  # 4
            "```text",  # 5
            "not code",  # 6
            "```",  # 7
            "!!! note",  # 8
            "    ```py",  # 9
            "    b = a + 1",  # 10
            "    ```",  # 11
            "````python",  # 12
            "c = '```'",  # 13
            "````",  # 14
        ]
    )
    assert python_fences(text) == [(3, "a = 1\n"), (10, "b = a + 1\n"), (13, "c = '```'\n")]


def test_unclosed_fence_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 2 is never closed"):
        python_fences("text\n```python\nx = 1\n")


# --- API reference ---------------------------------------------------------------------------
# The command line is documented as a command, not as an API; ``__main__`` only runs it.
NOT_API = {"__main__", "cli"}


def _public_modules() -> list[str]:
    """Modules and subpackages directly under flowkit that users import."""
    return sorted(
        f"flowkit.{info.name}"
        for info in pkgutil.iter_modules(flowkit.__path__)
        if not info.name.startswith("_") and info.name not in NOT_API
    )


def _directives() -> dict[str, set[str]]:
    """The ``::: target`` directives of each API page, by page path."""
    return {
        page.relative_to(ROOT).as_posix(): set(_DIRECTIVE.findall(page.read_text(encoding="utf-8")))
        for page in sorted((DOCS / "api").glob("*.md"))
    }


def _target(path: str) -> object:
    """The module or object that a directive's dotted path names."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module_name, _, attribute = path.rpartition(".")
        return getattr(importlib.import_module(module_name), attribute)


def test_api_directives_name_real_objects() -> None:
    for page, targets in _directives().items():
        for target in targets:
            try:
                _target(target)
            except (ImportError, AttributeError) as error:
                pytest.fail(f"{page}: '::: {target}' names nothing ({error})")


@pytest.mark.parametrize("module_name", ["flowkit", *_public_modules()])
def test_every_public_name_is_on_an_api_page(module_name: str) -> None:
    documented = set()
    for targets in _directives().values():
        documented |= {id(_target(target)) for target in targets}
    module = importlib.import_module(module_name)
    if id(module) in documented:
        return
    # Subpackages named in __all__ are checked by their own case.
    missing = [
        name
        for name in module.__all__
        if id(getattr(module, name)) not in documented
        and not isinstance(getattr(module, name), types.ModuleType)
    ]
    page = f"docs/api/{module_name.rpartition('.')[2]}.md"
    assert not missing, (
        f"{', '.join(missing)} from {module_name} appear on no API page: add a line "
        f"'::: {module_name}.NAME' for each, e.g. to {page} (a new page also needs one line "
        "under 'API reference' in mkdocs.yml)"
    )


def test_every_api_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [page for page in _directives() if page.removeprefix("docs/") not in nav]
    assert not missing, f"mkdocs.yml's nav does not list {missing}"
