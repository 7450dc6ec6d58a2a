"""Standardised vector flows: data (and context) scaled by stored statistics inside the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from flowkit.bijectors import Bijector
from flowkit.bijectors.base import Shape
from flowkit.distributions import Flow
from flowkit.distributions.standardized import StandardizedFlow

__all__ = ["StandardizedContext", "StandardizedFlow", "standardized", "standardized_from_dict"]


class StandardizedContext(Bijector):
    r"""Runs ``inner`` with its context standardised: :math:`c \mapsto (c - \mu_c) / \sigma_c`.

    The statistics are buffers, saved with the model. The map of ``x`` is ``inner``'s, so are its
    shapes, domain and log-determinant.

    Args:
        inner: The conditional bijector.
        mean: Per-feature mean of the context, shape ``(K,)``.
        std: Per-feature standard deviation of the context (positive), shape ``(K,)``.
    """

    context_mean: Tensor
    context_std: Tensor

    def __init__(self, inner: Bijector, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        mean, std = (
            torch.as_tensor(mean, dtype=torch.float32),
            torch.as_tensor(std, dtype=torch.float32),
        )
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(
                f"StandardizedContext expects mean and std of shape (K,), got {tuple(mean.shape)} "
                f"and {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError(
                f"StandardizedContext expects positive standard deviations, got {std.tolist()}"
            )
        self.inner = inner
        self.event_rank = inner.event_rank
        self.domain = inner.domain
        self.codomain = inner.codomain
        self.register_buffer("context_mean", mean)
        self.register_buffer("context_std", std)

    @property
    def latent_rank(self) -> int:
        """The inner bijector's latent rank."""
        return self.inner.latent_rank

    def _context(self, context: Tensor | None) -> Tensor | None:
        if context is None:
            return None
        return (context - self.context_mean.to(context.dtype)) / self.context_std.to(context.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The inner forward map at the standardised context."""
        return self.inner.forward(x, self._context(context))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The inner inverse map at the standardised context."""
        return self.inner.inverse(z, self._context(context))

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The inner bijector's output shape."""
        return self.inner.forward_shape(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The inner bijector's input shape."""
        return self.inner.inverse_shape(shape)


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
