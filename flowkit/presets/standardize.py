"""Standardised vector flows: data (and context) scaled by stored statistics inside the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowkit.distributions import Flow
from flowkit.distributions.standardized import StandardizedFlow

__all__ = ["StandardizedFlow", "standardized", "standardized_from_dict"]


def standardized(
    flow: Flow,
    mean: Sequence[float],
    std: Sequence[float],
    context_mean: Sequence[float] | None = None,
    context_std: Sequence[float] | None = None,
) -> StandardizedFlow:
    r"""``flow`` over data in its own units: :math:`x \mapsto (x - \mu) / \sigma` runs first.

    The standardisation is computed in float64 from float64 statistics (buffers, saved with the
    model) before the flow's own dtype applies, so ``log_prob`` takes data in its own units (any
    floating dtype), includes the log-determinant :math:`-\sum \log \sigma` and is a density of
    the unscaled data; samples come out in the data's units (float64). With context statistics the
    context is standardised before the conditioners see it. See
    :class:`~flowkit.distributions.standardized.StandardizedFlow`.

    Args:
        flow: A flow over standardised vectors, shape ``(D,)``.
        mean: Per-feature means, ``D`` values.
        std: Per-feature standard deviations, ``D`` positive values.
        context_mean: Per-feature means of the context, or None.
        context_std: Per-feature standard deviations of the context, or None.

    Returns:
        A new flow sharing ``flow``'s base and bijector.
    """
    return StandardizedFlow(flow, mean, std, context_mean, context_std)


def standardized_from_dict(flow: Flow, statistics: Mapping[str, Any] | None) -> Flow:
    """:func:`standardized` with the statistics stored in a checkpoint's ``data`` entry.

    Without statistics (None or empty) the flow is returned as it is.
    """
    if not statistics:
        return flow
    return standardized(
        flow,
        statistics["mean"],
        statistics["std"],
        statistics.get("context_mean"),
        statistics.get("context_std"),
    )
