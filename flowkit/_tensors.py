"""Tensor checks and reductions shared across flowkit, and the switch for value checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_dtype",
    "check_event_shape",
    "is_compiling",
    "reduce_to_batch",
    "set_validation",
    "sum_rightmost",
    "validation_enabled",
]

_VALIDATION = {"enabled": True}


def set_validation(enabled: bool) -> None:
    """Turn the value checks (finiteness, domains) on or off for the whole process.

    Shape and dtype checks cost only Python work and always run. Value checks read the data and, on
    a GPU, synchronise with the device; a tuned training loop may switch them off. They never run
    inside ``torch.compile``.
    """
    _VALIDATION["enabled"] = bool(enabled)


def validation_enabled() -> bool:
    """Whether value checks run now (on, and not being traced by ``torch.compile``)."""
    return _VALIDATION["enabled"] and not is_compiling()


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the calling code."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch 2.2


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` rightmost dimensions of ``value`` (no-op for ``dims == 0``)."""
    if dims == 0:
        return value
    # flatten, not reshape(..., -1): an empty batch leaves -1 ambiguous.
    return value.flatten(value.dim() - dims).sum(-1)


def reduce_to_batch(log_abs_det: Tensor, batch_rank: int) -> Tensor:
    """Sum every dimension of ``log_abs_det`` after the first ``batch_rank`` (the batch)."""
    if log_abs_det.dim() == batch_rank:
        return log_abs_det
    return log_abs_det.flatten(batch_rank).sum(-1)


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_event_shape(
    name: str, x: Tensor | Sequence[int], expected: Sequence[int | None], what: str = "input"
) -> None:
    """Raise a ValueError unless the trailing dims of ``x`` (a tensor or shape) match ``expected``.

    ``None`` in ``expected`` matches any size. The message names both shapes.
    """
    shape = tuple(x.shape) if isinstance(x, Tensor) else tuple(x)
    rank = len(expected)
    if len(shape) < rank:
        raise ValueError(
            f"{name} expects {what} with event shape {_pattern(expected)} (at least {rank} dims), "
            f"got shape {_shape_str(shape)}"
        )
    actual = shape[len(shape) - rank :]
    for got, want in zip(actual, expected):
        if want is not None and got != want:
            raise ValueError(
                f"{name} expects {what} with event shape {_pattern(expected)}, "
                f"got event shape {_shape_str(actual)} (full shape {_shape_str(shape)})"
            )


def _pattern(expected: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if e is None else str(int(e)) for e in expected) + ")"


def check_dtype(name: str, x: Tensor, what: str = "input") -> None:
    """Raise a TypeError unless ``x`` is a floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects {what} as a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} expects a floating-point {what} (float32 or float64), got dtype {x.dtype}; "
            "images stored as integers must first be dequantized (see flowkit.data)"
        )
