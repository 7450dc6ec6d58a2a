"""Constructors of the piecewise and circular spline bijectors, for the shared bijector registry.

Entries as in ``tests/registry_autoregressive.py``: ``(id, constructor, event_shape,
context_shape)``, optionally followed by a dict of further :class:`tests.registry.Case` fields.
"""

from __future__ import annotations

from flowkit.bijectors import (
    Autoregressive,
    CircularSplineAutoregressive,
    CircularSplineCoupling,
    Coupling,
    CubicSplineMap,
    LinearSplineMap,
    QuadraticSplineMap,
    SplineAutoregressive,
    SplineCoupling,
    channel_mask,
)
from flowkit.nn import MADE, MLP

__all__ = ["ENTRIES"]

ENTRIES: list[tuple] = [
    (
        "coupling-linear-spline-map",
        lambda: Coupling(
            MLP(2, 3 * 5, (8,)), channel_mask(5, event_rank=1), LinearSplineMap(bins=5)
        ),
        (5,),
        None,
    ),
    (
        "coupling-quadratic-spline-map-context",
        lambda: Coupling(
            MLP(2, 2 * 9, (8,), context_features=3),
            channel_mask(4, event_rank=1),
            QuadraticSplineMap(bins=4, tail_bound=2.0),
        ),
        (4,),
        (3,),
    ),
    (
        "spline-coupling-cubic",
        lambda: SplineCoupling(
            MLP(2, 3 * 10, (8,)), channel_mask(5, event_rank=1), bins=4, spline="cubic"
        ),
        (5,),
        None,
    ),
    (
        "autoregressive-made-cubic-spline-map",
        lambda: Autoregressive(MADE(3, 10, (8,)), CubicSplineMap(bins=4), (3,)),
        (3,),
        None,
    ),
    (
        "spline-autoregressive-quadratic",
        lambda: SplineAutoregressive(3, bins=4, hidden_features=(8,), spline="quadratic"),
        (3,),
        None,
    ),
    (
        "spline-autoregressive-linear-context",
        lambda: SplineAutoregressive(
            3, bins=4, hidden_features=(8,), spline="linear", context_features=2
        ),
        (3,),
        (2,),
    ),
    (
        "circular-spline-coupling",
        lambda: CircularSplineCoupling(MLP(4, 2 * 13, (8,)), channel_mask(4, event_rank=1), bins=4),
        (4,),
        None,
    ),
    (
        "circular-spline-coupling-context",
        lambda: CircularSplineCoupling(
            MLP(4, 16, (8,), context_features=3),
            channel_mask(3, event_rank=1, flip=True),
            bins=5,
        ),
        (3,),
        (3,),
    ),
    (
        "circular-spline-autoregressive",
        lambda: CircularSplineAutoregressive(3, bins=4, hidden_features=(8,)),
        (3,),
        None,
    ),
    (
        "circular-spline-autoregressive-context",
        lambda: CircularSplineAutoregressive(
            2, bins=4, hidden_features=(8, 8), context_features=2, residual=True
        ),
        (2,),
        (2,),
    ),
]
