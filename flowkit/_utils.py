"""The argument checks that flowkit.train.config reads; their home is flowkit._checks."""

from __future__ import annotations

from flowkit._checks import check_float, check_int

__all__ = ["check_float", "check_int"]
