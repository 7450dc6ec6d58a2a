"""Small internal helpers shared across flowkit: shape checks, reductions, compile detection."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = [
    "accepts_context",
    "every_nth",
    "call_network",
    "reduce_to_batch",
    "check_dtype",
    "check_event_shape",
    "check_finite",
    "check_support",
    "is_compiling",
    "sum_rightmost",
    "validation_enabled",
    "set_validation",
]

_VALIDATION = {"enabled": True}


def set_validation(enabled: bool) -> None:
    """Turn the value checks (finiteness, domains) on or off for the whole process.

    Shape and dtype checks cost only Python work and always run. Value checks read the data and, on a
    GPU, synchronise with the device; a tuned training loop may switch them off. They never run inside
    ``torch.compile``.
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
    return value.reshape(value.shape[: value.dim() - dims] + (-1,)).sum(-1)


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
    """Raise a ValueError unless the trailing dims of ``x`` (a tensor or a shape) match ``expected``.

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


def check_finite(name: str, x: Tensor, what: str = "input") -> None:
    """Raise a ValueError if ``x`` holds NaN or infinity (only while validation is enabled)."""
    if not validation_enabled():
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"{name} expects a finite {what}, got {bad} non-finite value(s) "
            f"(first at index {first}: {x[first].item()})"
        )


def check_support(
    name: str, x: Tensor, support: constraints.Constraint, what: str = "input"
) -> None:
    """Raise a ValueError if ``x`` leaves ``support`` (only while validation is enabled).

    The real line accepts everything, infinities included, so it costs nothing.
    """
    if support is constraints.real or not validation_enabled():
        return
    inside = support.check(x)
    if not bool(inside.all()):
        outside = ~inside
        first = tuple(int(i) for i in outside.nonzero()[0])
        raise ValueError(
            f"{name} expects {what} values in {support}, got {int(outside.sum())} outside it "
            f"(first at index {first}: {x[first].item()})"
        )


def accepts_context(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a ``context`` argument (then flowkit passes it on)."""
    try:
        return "context" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def every_nth(value: Tensor, dim: int, start: int, step: int) -> Tensor:
    """``value[..., start::step, ...]`` along ``dim``: de-interleaves stacked parameters."""
    index = [slice(None)] * value.dim()
    index[dim] = slice(start, None, step)
    return value[tuple(index)]


def call_network(
    network: nn.Module,
    x: Tensor,
    event_rank: int,
    context: Tensor | None,
    pass_context: bool,
) -> Tensor:
    """Call a conditioner network on ``x`` with its batch dimensions flattened into one.

    Convolutional layers take exactly one batch dimension, so a bijector with any batch shape
    (none, or several) hands its network ``(N, *event)`` and reshapes the result back. The context,
    when passed, shares ``x``'s batch dimensions and is flattened the same way.
    """
    batch_shape = x.shape[: x.dim() - event_rank]
    if len(batch_shape) == 1:
        return network(x, context) if pass_context else network(x)
    flat_x = x.reshape((-1,) + x.shape[x.dim() - event_rank :])
    if pass_context:
        flat_context = None
        if context is not None:
            context = context.expand(batch_shape + context.shape[len(batch_shape) :])
            flat_context = context.reshape((-1,) + context.shape[len(batch_shape) :])
        out = network(flat_x, flat_context)
    else:
        out = network(flat_x)
    return out.reshape(batch_shape + out.shape[1:])
