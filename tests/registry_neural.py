"""Constructors of the neural autoregressive (DSF, DDSF) and UMNN bijectors, for the registry.

Each entry is ``(id, constructor, event_shape, context_shape)``: ``constructor()`` returns a
coupling or an autoregressive bijector with one of the monotone maps of
``flowkit/bijectors/neural.py`` and ``flowkit/bijectors/umnn.py``, whose contract
``flowkit.testing.check_bijector`` checks at ``event_shape``.
"""

from __future__ import annotations

from typing import Any

from flowkit.bijectors import (
    Autoregressive,
    Coupling,
    DeepDenseSigmoidMap,
    DeepSigmoidMap,
    ElementwiseMap,
    UMNNMap,
    channel_mask,
)
from flowkit.nn import MADE, MLP

__all__ = ["ENTRIES"]

# Enough nodes that the quadrature's own derivative matches log g(x) to the float64 tolerance
# (1e-8) at the harness's inputs, where the brute-force Jacobian differentiates the quadrature.
UMNN_NODES = 65


def _autoregressive(features: int, transform: ElementwiseMap, context: int | None = None):
    made = MADE(
        features,
        transform.params_per_element,
        (8,),
        context_features=context,
        order="reversed",
    )
    return Autoregressive(made, transform, (features,))


def _coupling(features: int, transform: ElementwiseMap, context: int | None = None):
    kept = features // 2
    network = MLP(
        kept, transform.params_per_element * (features - kept), (8,), context_features=context
    )
    return Coupling(network, channel_mask(features, event_rank=1), transform)


ENTRIES: list[tuple[Any, ...]] = [
    ("naf-dsf-autoregressive", lambda: _autoregressive(3, DeepSigmoidMap(3, 2)), (3,), None),
    (
        "naf-ddsf-autoregressive-context",
        lambda: _autoregressive(3, DeepDenseSigmoidMap(3, 2), context=2),
        (3,),
        (2,),
    ),
    ("naf-dsf-coupling", lambda: _coupling(4, DeepSigmoidMap(4)), (4,), None),
    (
        "naf-ddsf-coupling-context",
        lambda: _coupling(5, DeepDenseSigmoidMap(3, 3), context=2),
        (5,),
        (2,),
    ),
    (
        "umnn-autoregressive",
        lambda: _autoregressive(3, UMNNMap(3, (8,), nodes=UMNN_NODES)),
        (3,),
        None,
    ),
    (
        "umnn-coupling-context",
        lambda: _coupling(4, UMNNMap(2, (8, 8), nodes=UMNN_NODES), context=2),
        (4,),
        (2,),
    ),
    (
        "umnn-autoregressive-per-element",
        lambda: _autoregressive(3, UMNNMap(3, (8,), nodes=UMNN_NODES, elements=3)),
        (3,),
        None,
    ),
    (
        "umnn-coupling-per-element-context",
        lambda: _coupling(5, UMNNMap(2, (8, 8), nodes=UMNN_NODES, elements=3), context=2),
        (5,),
        (2,),
    ),
]
