"""Small assertions shared by several test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def raises_with(error: type[Exception], call: Callable[[], object], *fragments: str) -> str:
    """Run ``call``, require ``error``, and require every fragment (literally) in its message."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in {message!r}"
    return message


def grid_mass(log_prob: Callable[[torch.Tensor], torch.Tensor], bound: float, points: int) -> float:
    """Integral of ``exp(log_prob)`` over ``[-bound, bound]^2`` by the trapezoidal rule, in float64.

    ``log_prob`` takes points of shape ``(n, 2)``; it is evaluated on ``points x points`` nodes.
    """
    axis = torch.linspace(-bound, bound, points, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)
    with torch.no_grad():
        density = log_prob(grid.reshape(-1, 2)).exp().reshape(points, points)
    return float(torch.trapezoid(torch.trapezoid(density, axis), axis))
