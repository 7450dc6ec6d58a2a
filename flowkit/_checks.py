"""Argument checks shared across flowkit: numbers, choices, shapes, size caps, context arguments."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

import torch

if TYPE_CHECKING:
    from torch import nn
    from typing_extensions import TypeGuard

__all__ = [
    "MAX_BINS",
    "MAX_CLASSES",
    "MAX_FEATURES",
    "MAX_IMAGE_SIZE",
    "MAX_LEVELS",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_WIDTH",
    "MIN_SEED",
    "accepts_context",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_shape",
    "is_int",
]

# Caps on single size fields, far above any published model (Glow: K=48, width 512; RealNVP: 8
# blocks; MAF/NSF: 20 steps, width 1024), so an absurd value fails at once, before a long build.
MAX_STEPS = 4096
MAX_LEVELS = 16
MAX_WIDTH = 65536
MAX_FEATURES = 2**24
MAX_IMAGE_SIZE = 65536
MAX_CLASSES = 2**20
MAX_BINS = 4096
# torch.manual_seed takes any int that fits 64 bits, signed or not.
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1


def is_int(value: object) -> TypeGuard[numbers.Integral]:
    """Whether ``value`` is an integer; a bool is an int to Python but never a size or a count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_str(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum}, {maximum}]"
    if minimum is not None:
        return f">= {minimum}"
    if maximum is not None:
        return f"<= {maximum}"
    return "of any value"


@overload
def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: Literal[False] = False,
) -> int: ...


@overload
def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool,
) -> int | None: ...


def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
) -> int | None:
    """Return ``value`` as an int, or raise naming ``owner``, the field, the value and the range.

    Raises:
        TypeError: ``value`` is not an integer (bools and floats such as ``1.5`` or ``2.0`` are
            refused; so is None unless ``optional``).
        ValueError: ``value`` lies outside ``[minimum, maximum]``.
    """
    if value is None and optional:
        return None
    allowed = f"an int {_range_str(minimum, maximum)}" + (" or None" if optional else "")
    if not is_int(value):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{owner} expects {name} as {allowed}, got {number}")
    return number


@overload
def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: Literal[False] = False,
) -> float: ...


@overload
def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: bool,
) -> float | None: ...


def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: bool = False,
) -> float | None:
    """Return ``value`` as a finite float, or raise naming ``owner``, the field, value and range.

    Ints are accepted (as floats); bools, strings, NaN and infinities are not.
    """
    if value is None and optional:
        return None
    low = "" if minimum is None else (f"> {minimum}" if exclusive_minimum else f">= {minimum}")
    high = "" if maximum is None else (f"< {maximum}" if exclusive_maximum else f"<= {maximum}")
    bounds = " and ".join(b for b in (low, high) if b)
    allowed = (
        "a finite number" + (f" {bounds}" if bounds else "") + (" or None" if optional else "")
    )
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and (number <= minimum if exclusive_minimum else number < minimum))
        or (maximum is not None and (number >= maximum if exclusive_maximum else number > maximum))
    ):
        raise ValueError(f"{owner} expects {name} as {allowed}, got {number}")
    return number


def check_bool(owner: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a bool; raise a TypeError naming the field otherwise."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{owner} expects {name} as True or False, got {value!r} ({type(value).__name__})"
        )
    return value


def check_choice(owner: str, name: str, value: object, choices: Sequence[object]) -> None:
    """Raise a ValueError unless ``value`` is one of ``choices``."""
    if not any(
        value is choice or (type(value) is type(choice) and value == choice) for choice in choices
    ):
        raise ValueError(f"{owner} expects {name} in {tuple(choices)}, got {value!r}")


def check_shape(
    owner: str,
    name: str,
    value: object,
    *,
    rank: int | None = None,
    minimum: int = 1,
    maximum: int | None = None,
    labels: str | None = None,
) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ints, each in ``[minimum, maximum]``, of length ``rank``.

    Args:
        owner: Who checks (the class or function name), for the message.
        name: The field, for the message.
        value: A sequence of ints (a tuple, a list, a ``torch.Size``).
        rank: Required length, or None for any.
        minimum: Smallest allowed entry.
        maximum: Largest allowed entry, or None.
        labels: How to name the entries in the message, e.g. ``"(C, H, W)"``.
    """
    what = labels or (f"{rank} ints" if rank is not None else "a sequence of ints")
    allowed = f"{what}, each {_range_str(minimum, maximum)}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Size)):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    entries = tuple(value)
    if rank is not None and len(entries) != rank:
        raise ValueError(
            f"{owner} expects {name} as {allowed}, got {entries} ({len(entries)} entries)"
        )
    for entry in entries:
        if not is_int(entry):
            raise TypeError(
                f"{owner} expects {name} as {allowed}, got {entries} (entry {entry!r} is a "
                f"{type(entry).__name__})"
            )
        if int(entry) < minimum or (maximum is not None and int(entry) > maximum):
            raise ValueError(f"{owner} expects {name} as {allowed}, got {entries}")
    return tuple(int(e) for e in entries)


def accepts_context(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a ``context`` argument (then flowkit passes it on)."""
    try:
        return "context" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
