"""Constructors of the autoregressive and spline bijectors, for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape)``; ``constructor()`` returns a fresh
bijector whose contract ``flowkit.testing.check_bijector`` checks at ``event_shape`` (with a
context of event shape ``context_shape`` when that is not None).
"""

from flowkit.bijectors import (
    InverseAutoregressive,
    MaskedAffineAutoregressive,
    RationalQuadraticSpline,
    SplineAutoregressive,
    SplineCoupling,
    channel_mask,
    checkerboard_mask,
)
from flowkit.nn import MLP, GlowConditioner

__all__ = ["ENTRIES"]

ENTRIES = [
    ("maf", lambda: MaskedAffineAutoregressive(3, hidden_features=(8, 8)), (3,), None),
    (
        "maf-context-residual-reversed",
        lambda: MaskedAffineAutoregressive(
            4, context_features=2, hidden_features=(8, 8), residual=True, order="reversed"
        ),
        (4,),
        (2,),
    ),
    (
        "maf-exp-permuted-order",
        lambda: MaskedAffineAutoregressive(
            3, hidden_features=(8,), order=[1, 2, 0], scale_fn="exp"
        ),
        (3,),
        None,
    ),
    (
        "maf-random-init",
        lambda: MaskedAffineAutoregressive(3, hidden_features=(8,), identity_init=False),
        (3,),
        None,
    ),
    ("iaf", lambda: InverseAutoregressive(3, hidden_features=(8, 8)), (3,), None),
    (
        "iaf-context",
        lambda: InverseAutoregressive(3, context_features=2, hidden_features=(8,), residual=True),
        (3,),
        (2,),
    ),
    ("rq-spline-scalar", lambda: RationalQuadraticSpline(bins=4, tail_bound=1.5), (3,), None),
    (
        "rq-spline-vector",
        lambda: RationalQuadraticSpline((3,), bins=5, tail_bound=2.0, event_rank=1),
        (3,),
        None,
    ),
    (
        "spline-coupling-vector",
        lambda: SplineCoupling(MLP(2, 3 * 11, (8,)), channel_mask(5, event_rank=1), bins=4),
        (5,),
        None,
    ),
    (
        "spline-coupling-vector-context",
        lambda: SplineCoupling(
            MLP(2, 2 * 14, (8,), context_features=3),
            channel_mask(4, event_rank=1, flip=True),
            bins=5,
            tail_bound=2.0,
        ),
        (4,),
        (3,),
    ),
    (
        "spline-coupling-image",
        lambda: SplineCoupling(
            GlowConditioner(2, 2 * 11, hidden_channels=8), channel_mask(4), bins=4
        ),
        (4, 2, 2),
        None,
    ),
    (
        "spline-coupling-checkerboard",
        lambda: SplineCoupling(
            GlowConditioner(2, 2 * 11, hidden_channels=8), checkerboard_mask(2, 2), bins=4
        ),
        (2, 2, 2),
        None,
    ),
    (
        "spline-autoregressive",
        lambda: SplineAutoregressive(3, bins=4, hidden_features=(8, 8)),
        (3,),
        None,
    ),
    (
        "spline-autoregressive-context-residual",
        lambda: SplineAutoregressive(
            4, bins=5, tail_bound=2.0, context_features=2, hidden_features=(8, 8), residual=True
        ),
        (4,),
        (2,),
    ),
]
