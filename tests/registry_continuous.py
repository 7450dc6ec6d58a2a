"""Constructors of the continuous flows, for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape)``: ``constructor()`` returns a
:class:`~flowkit.bijectors.ContinuousFlow` with the exact trace, solved by an adaptive solver at
tolerances tight enough for the harness's float64 checks (the solver's error, not the map, bounds
how closely forward and inverse agree).
"""

from __future__ import annotations

from collections.abc import Callable

from flowkit.bijectors import Bijector, ContinuousFlow
from flowkit.nn import VectorFieldMLP

__all__ = ["ENTRIES", "small_continuous_flow"]

# dopri5 at these tolerances reconstructs inputs to about 1e-10 in float64 (float32 solves at
# ContinuousFlow's floor) in a few dozen steps.
TOLERANCE = 1e-10


def small_continuous_flow(
    features: int, context_features: int | None = None, *, adjoint: bool = False
) -> ContinuousFlow:
    """A ContinuousFlow on ``[0, 1/2]`` with a field of one hidden layer of width 6, by dopri5."""
    field = VectorFieldMLP(features, (6,), context_features=context_features, time_frequencies=1)
    return ContinuousFlow(
        field,
        features=features,
        t1=0.5,
        rtol=TOLERANCE,
        atol=TOLERANCE,
        adjoint=adjoint,
        context_features=context_features,
    )


ENTRIES: list[tuple[str, Callable[[], Bijector], tuple[int, ...], tuple[int, ...] | None]] = [
    ("continuous-flow", lambda: small_continuous_flow(2), (2,), None),
    ("continuous-flow-context", lambda: small_continuous_flow(3, 2), (3,), (2,)),
]
