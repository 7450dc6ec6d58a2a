"""Calling conditioner networks on any batch shape, and de-interleaving their outputs."""

from __future__ import annotations

from torch import Tensor, nn

from flowkit.bijectors.precision import as_dtype_of

__all__ = ["call_network", "every_nth"]


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
    when passed, shares ``x``'s batch dimensions and is flattened the same way. The output comes
    back in ``x``'s dtype, also when the network ran under autocast in half precision (see
    :mod:`flowkit.bijectors.precision`).
    """
    batch_shape = x.shape[: x.dim() - event_rank]
    if len(batch_shape) == 1:
        return as_dtype_of(network(x, context) if pass_context else network(x), x)
    flat_x = x.reshape((-1,) + x.shape[x.dim() - event_rank :])
    if pass_context:
        flat_context = None
        if context is not None:
            context = context.expand(batch_shape + context.shape[len(batch_shape) :])
            flat_context = context.reshape((-1,) + context.shape[len(batch_shape) :])
        out = network(flat_x, flat_context)
    else:
        out = network(flat_x)
    return as_dtype_of(out.reshape(batch_shape + out.shape[1:]), x)
