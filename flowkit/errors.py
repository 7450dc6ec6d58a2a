"""flowkit's exception hierarchy: every error a user can cause derives from FlowkitError."""

from __future__ import annotations

__all__ = ["FlowkitError"]


class FlowkitError(Exception):
    """Base of the errors flowkit raises for bad input, damaged files and failed runs.

    Each message is one complete line that names what was expected and what came, so the command
    line prints it as ``flowkit: error: <message>`` without a traceback. Subclasses also derive
    from the built-in class that fits (``ValueError``, ``RuntimeError``, ...), so existing
    ``except ValueError`` clauses keep working.
    """
