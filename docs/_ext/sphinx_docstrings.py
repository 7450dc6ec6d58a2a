r"""Griffe extension: render flowkit's Sphinx-flavoured Google docstrings with mkdocstrings.

flowkit's docstrings use Sphinx roles (``:math:`...```, ``:class:`...```, ``:func:`...```, ...) and
an ``Example:`` section, as STYLE.md asks. mkdocstrings renders docstrings as Markdown, where the
roles would show as literal text, and griffe's Google parser knows only ``Examples:``, so it
would render the ``>>>`` lines of an ``Example:`` section as nested block quotes. This extension
rewrites each docstring before it is parsed: math becomes ``\(...\)`` for
``pymdownx.arithmatex``; a cross-reference becomes an autorefs link when it names a flowkit object
(a broken one then fails ``mkdocs build --strict``) or inline code when it names another library's
object; ``Example:`` becomes ``Examples:``. Links name what the rendered pages hold: the defining
path of a re-exported object, the defining class of an inherited member, and the class of an
attribute described only in the class's ``Attributes:`` section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

__all__ = ["SphinxDocstrings", "convert_docstring"]

_logger = griffe.get_logger(__name__)
_ROLE = re.compile(r":(?P<role>[a-z]+):`(?P<target>[^`]+)`")
_EXAMPLE_SECTION = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_CROSS_REFERENCE_ROLES = {"attr", "class", "data", "exc", "func", "meth", "mod", "obj"}


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    """The object that ``obj`` stands for, following re-exports."""
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def _inherited(obj: griffe.Object, name: str) -> str | None:
    """Path of ``name`` as a member that the class around ``obj`` inherits, or None."""
    scope: griffe.Object | None = obj
    while scope is not None and not scope.is_class:
        scope = scope.parent
    if scope is None:
        return None
    try:
        member = scope.all_members.get(name)
        return None if member is None else _final(member).path
    except griffe.AliasResolutionError:
        return None


def _anchor(obj: griffe.Object, path: str) -> str:
    """The identifier under which the rendered docs hold the flowkit object ``path``.

    The API pages render an object once, under a public path, and register its defining path
    too; a re-export (``flowkit.Flow``) is neither, so it is replaced by the defining path. An
    attribute without a docstring of its own (a dataclass field described in its class's
    ``Attributes:`` section) has no heading, so a reference to it links to its class. A path
    that names nothing is returned as it is, for the strict build to report.
    """
    try:
        target = _final(obj.modules_collection[path])
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path
    if target.is_attribute and target.docstring is None and target.parent is not None:
        if target.parent.is_class:
            return target.parent.path
    return target.path


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """Full path of ``target`` as seen from ``obj``, or None when it is not a flowkit object."""
    if target.startswith("flowkit.") or target == "flowkit":
        return _anchor(obj, target)
    head, _, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except griffe.NameResolutionError:
        inherited = _inherited(obj, head)
        if inherited is not None:
            path = inherited
        elif not rest:
            # A bare name must be in scope: most likely a typo or a missing import.
            _logger.warning("%s: the docstring refers to %r, which is not in scope", obj.path, head)
            return None
        else:
            return None
    if path != "flowkit" and not path.startswith("flowkit."):
        return None
    return _anchor(obj, f"{path}.{rest}" if rest else path)


def convert_docstring(text: str, obj: griffe.Object) -> str:
    """Rewrite the Sphinx roles and ``Example:`` sections of ``text``, a docstring of ``obj``."""

    def replace(match: re.Match[str]) -> str:
        role, target = match["role"], match["target"]
        if role == "math":
            return rf"\({target}\)"
        if role not in _CROSS_REFERENCE_ROLES:
            # A warning, so that a strict build fails and names the docstring.
            _logger.warning("%s: unknown Sphinx role :%s: in the docstring", obj.path, role)
            return f"`{target}`"
        shown = target.lstrip("~")
        if target.startswith("~"):
            shown = shown.rsplit(".", 1)[-1]
        path = _resolve(obj, target.lstrip("~"))
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    return _EXAMPLE_SECTION.sub(r"\g<indent>Examples:", _ROLE.sub(replace, text))


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class SphinxDocstrings(griffe.Extension):
    """Rewrite every docstring of a loaded package once its object tree is complete."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and every object below it."""
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert_docstring(obj.docstring.value, obj)
