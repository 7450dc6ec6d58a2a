"""Constructors of the flows made for variational inference, for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape)``: ``constructor()`` takes no
argument and returns a bijector ready for :func:`flowkit.testing.check_bijector` at that event
shape, with a context of event shape ``context_shape`` for the amortised ones. The bijectors are
closed-form in ``inverse``; the ``inverse-*`` entries put that direction in ``forward``, where the
harness compares the log-determinant with the autograd Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable

from flowkit.bijectors import (
    Bijector,
    Compose,
    HouseholderSylvester,
    Inverse,
    OrthogonalSylvester,
    Planar,
    Radial,
    TriangularSylvester,
)

__all__ = ["ENTRIES", "planar_stack"]


def planar_stack(features: int, steps: int = 3, seed: int = 0) -> Compose:
    """Planar and radial steps alternating, as a variational family is built from them."""
    parts: list[Bijector] = []
    for step in range(steps):
        parts.append(Planar(features, seed=seed + step))
        parts.append(Radial(features, seed=seed + step))
    return Compose(parts)


ENTRIES: list[tuple[str, Callable[[], Bijector], tuple[int, ...], tuple[int, ...] | None]] = [
    ("planar", lambda: Planar(3, seed=0), (3,), None),
    ("planar-one-feature", lambda: Planar(1, seed=1), (1,), None),
    ("inverse-planar", lambda: Inverse(Planar(4, seed=2)), (4,), None),
    ("radial", lambda: Radial(3, seed=0), (3,), None),
    ("inverse-radial", lambda: Inverse(Radial(2, seed=1)), (2,), None),
    ("orthogonal-sylvester", lambda: OrthogonalSylvester(4, seed=0), (4,), None),
    ("orthogonal-sylvester-bottleneck", lambda: OrthogonalSylvester(5, 2, seed=1), (5,), None),
    ("householder-sylvester", lambda: HouseholderSylvester(4, 2, seed=0), (4,), None),
    ("triangular-sylvester", lambda: TriangularSylvester(3, seed=0), (3,), None),
    (
        "inverse-triangular-sylvester-reversed",
        lambda: Inverse(TriangularSylvester(3, reverse=True, seed=1)),
        (3,),
        None,
    ),
    ("compose-planar-radial", lambda: planar_stack(2), (2,), None),
    ("planar-amortised", lambda: Planar(3, context_features=2, seed=3), (3,), (2,)),
    ("radial-amortised", lambda: Radial(3, context_features=2, seed=3), (3,), (2,)),
    (
        "orthogonal-sylvester-amortised",
        lambda: OrthogonalSylvester(4, 3, context_features=2, seed=3),
        (4,),
        (2,),
    ),
    (
        "householder-sylvester-amortised",
        lambda: HouseholderSylvester(3, 2, context_features=2, seed=3),
        (3,),
        (2,),
    ),
    (
        "triangular-sylvester-amortised",
        lambda: TriangularSylvester(3, reverse=True, context_features=2, seed=3),
        (3,),
        (2,),
    ),
]
