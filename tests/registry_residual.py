"""Constructors of residual-flow blocks for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape)``, as in
``tests/registry_variational.py``. The blocks use the exact log-determinant, so the harness can
compare it with the autograd Jacobian; the stochastic estimators are tested in
``tests/bijectors/test_residual.py``. A Lipschitz bound of 0.7 keeps the fixed-point inverse short.
"""

from __future__ import annotations

from collections.abc import Callable

from flowkit.bijectors import Bijector, Compose, Inverse, ResidualBlock
from flowkit.nn import LipschitzConvNet, LipschitzMLP

__all__ = ["ENTRIES", "residual_vector"]

COEFFICIENT = 0.7


def residual_vector(features: int, activation: str = "lipswish", seed: int = 0) -> ResidualBlock:
    """A small vector residual block with the exact log-determinant."""
    network = LipschitzMLP(features, (8, 8), coefficient=COEFFICIENT, activation=activation)
    return ResidualBlock(network, log_det="exact", seed=seed)


def _residual_image() -> ResidualBlock:
    network = LipschitzConvNet(2, 4, input_size=(2, 3), coefficient=COEFFICIENT)
    return ResidualBlock(network, event_rank=3, log_det="exact", seed=1)


def _residual_conditional() -> ResidualBlock:
    network = LipschitzMLP(3, (8,), context_features=2, coefficient=COEFFICIENT)
    return ResidualBlock(network, log_det="exact", seed=2)


ENTRIES: list[tuple[str, Callable[[], Bijector], tuple[int, ...], tuple[int, ...] | None]] = [
    ("residual-block", lambda: residual_vector(3), (3,), None),
    ("residual-block-elu", lambda: residual_vector(2, "elu", seed=1), (2,), None),
    (
        "compose-residual-tanh",
        lambda: Compose(residual_vector(4, "tanh", seed=2), residual_vector(4, seed=3)),
        (4,),
        None,
    ),
    ("inverse-residual-block", lambda: Inverse(residual_vector(3, seed=4)), (3,), None),
    ("residual-block-image", _residual_image, (2, 2, 3), None),
    ("residual-block-conditional", _residual_conditional, (3,), (2,)),
]
