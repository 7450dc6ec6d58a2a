"""flowkit: composable normalizing flows for PyTorch, with a faithful Glow."""

from flowkit import bijectors, data, distributions, nn
from flowkit._utils import set_validation
from flowkit.bijectors import Bijector, Compose, Inverse, InverseNotAvailable, from_transform
from flowkit.distributions import (
    ConditionalDiagonalNormal,
    DiagonalNormal,
    Flow,
    FlowDistribution,
    StandardNormal,
)
from flowkit.initialization import initialize

__version__ = "0.1.0"

__all__ = [
    "Bijector",
    "Compose",
    "ConditionalDiagonalNormal",
    "DiagonalNormal",
    "Flow",
    "FlowDistribution",
    "Inverse",
    "InverseNotAvailable",
    "StandardNormal",
    "bijectors",
    "data",
    "distributions",
    "from_transform",
    "initialize",
    "nn",
    "set_validation",
]
