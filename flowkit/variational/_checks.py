"""Checks at the boundary of flowkit.variational: the flow, the target, the context."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowkit.distributions.flow import Flow

__all__ = [
    "LogTarget",
    "call_target",
    "check_context",
    "check_flow_and_target",
    "context_rows",
    "describe_nonfinite",
]

LogTarget = Callable[..., Tensor]

# How many offending samples an error message prints.
SHOWN_VALUES = 3


def check_flow_and_target(owner: str, flow: object, log_target: object) -> Flow:
    """The flow, after checking that it is a Flow whose events match the target's ``dim``."""
    if not isinstance(flow, Flow):
        raise TypeError(f"{owner} expects a flowkit Flow, got {type(flow).__name__}")
    if not callable(log_target):
        raise TypeError(
            f"{owner} expects log_target as a callable x -> log-density of shape (batch,), got "
            f"{type(log_target).__name__}"
        )
    dim = getattr(log_target, "dim", None)
    if isinstance(dim, int) and not isinstance(dim, bool) and tuple(flow.event_shape) != (dim,):
        raise ValueError(
            f"{owner}: the target is {dim}-dimensional (events of shape ({dim},)) but the flow's "
            f"events have shape {tuple(flow.event_shape)}"
        )
    return flow


def check_context(
    owner: str, flow: Flow, context: Tensor | None, *, batched: bool
) -> Tensor | None:
    """Check ``context`` against the flow: one context (or, if ``batched``, a batch of them)."""
    if flow.context_shape is None:
        if context is not None:
            raise ValueError(
                f"{owner}: the flow is unconditional but a context was given (shape "
                f"{_shape(context)}); pass context=None or build a conditional Flow"
            )
        return None
    expected = tuple(flow.context_shape)
    if context is None:
        raise ValueError(
            f"{owner}: the flow is conditional and needs a context of shape {expected}"
            + (f" or (n, *{expected})" if batched else "")
            + ", got None"
        )
    if not isinstance(context, Tensor):
        raise TypeError(f"{owner} expects the context as a torch.Tensor, got {_shape(context)}")
    shape = tuple(context.shape)
    rank = len(expected)
    one = shape == expected
    many = batched and len(shape) == rank + 1 and shape[1:] == expected and shape[0] > 0
    if not (one or many):
        allowed = f"{expected}" + (f" or (n, {', '.join(map(str, expected))})" if batched else "")
        raise ValueError(f"{owner} expects a context of shape {allowed}, got shape {shape}")
    return context


def context_rows(
    flow: Flow, context: Tensor | None, count: int, index: Tensor | None = None
) -> Tensor | None:
    """``count`` context rows: the one context repeated, or rows of a batch (``index``/random)."""
    if context is None or flow.context_shape is None:
        return None
    if context.dim() == len(flow.context_shape):
        return context.expand((count, *flow.context_shape))
    if index is None:
        index = torch.randint(context.shape[0], (count,), device=context.device)
    return context[index]


def call_target(
    owner: str,
    log_target: LogTarget,
    x: Tensor,
    context: Tensor | None,
    *,
    strict: bool,
) -> Tensor:
    """``log_target(x)`` (or ``log_target(x, context)``), checked: shape ``(batch,)``, floating.

    With ``strict``, NaN and ``+inf`` are errors too (``-inf``, zero density, is allowed); without
    it they pass, so that a training step can be skipped instead.
    """
    batch = x.shape[0]
    try:
        value = log_target(x) if context is None else log_target(x, context)
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        if not strict:
            raise
        # At the first call a failure is most often a target of another dimension than the flow.
        given = f"samples of shape {tuple(x.shape)}" + (
            "" if context is None else f" and a context of shape {tuple(context.shape)}"
        )
        raise ValueError(f"{owner}: log_target failed on the flow's {given}: {error}") from error
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{owner}: log_target must return a torch.Tensor of shape ({batch},), got "
            f"{type(value).__name__}"
        )
    if tuple(value.shape) != (batch,):
        raise ValueError(
            f"{owner}: log_target must return one log-density per sample, shape ({batch},) for "
            f"samples of shape {tuple(x.shape)}, got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{owner}: log_target must return floating-point values, got dtype {value.dtype}"
        )
    if strict:
        bad = torch.isnan(value) | (value == float("inf"))
        if bool(bad.any()):
            where = bad.nonzero().flatten()[:SHOWN_VALUES]
            shown = ", ".join(f"{value[i].item()} at x = {x[i].tolist()}" for i in where)
            raise ValueError(
                f"{owner}: log_target must return finite values (or -inf for zero density), got "
                f"NaN or +inf for {int(bad.sum())} of {batch} samples: {shown}"
            )
    return value.to(x.dtype)


def describe_nonfinite(values: dict[str, Tensor]) -> str | None:
    """Name the first of ``values`` (in order) holding NaN or +inf, with a count; None if none."""
    for name, value in values.items():
        bad = torch.isnan(value) | (value == float("inf"))
        if bool(bad.any()):
            return f"{name} was NaN or +inf for {int(bad.sum())} of {value.numel()} values"
    return None


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__
