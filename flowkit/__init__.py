"""flowkit: composable normalizing flows for PyTorch, with a faithful Glow."""

from flowkit import bijectors, data, distributions, nn, presets, train
from flowkit._utils import set_validation
from flowkit.bijectors import Bijector, Compose, Inverse, InverseNotAvailable, from_transform
from flowkit.distributions import (
    ConditionalDiagonalNormal,
    DiagonalNormal,
    Flow,
    FlowDistribution,
    StandardNormal,
)
from flowkit.errors import FlowkitError
from flowkit.initialization import initialize
from flowkit.train import fit, load

__version__ = "0.1.0"

__all__ = [
    "Bijector",
    "Compose",
    "ConditionalDiagonalNormal",
    "DiagonalNormal",
    "Flow",
    "FlowDistribution",
    "FlowkitError",
    "Inverse",
    "InverseNotAvailable",
    "StandardNormal",
    "bijectors",
    "data",
    "distributions",
    "fit",
    "from_transform",
    "initialize",
    "load",
    "nn",
    "presets",
    "set_validation",
    "train",
]
