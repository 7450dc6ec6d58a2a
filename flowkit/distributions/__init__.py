"""Distributions: Gaussian bases, torch-distribution wrappers, and the Flow itself."""

from flowkit.distributions.base import Distribution, TorchBase
from flowkit.distributions.flow import Flow, FlowDistribution
from flowkit.distributions.normal import ConditionalDiagonalNormal, DiagonalNormal, StandardNormal

__all__ = [
    "ConditionalDiagonalNormal",
    "DiagonalNormal",
    "Distribution",
    "Flow",
    "FlowDistribution",
    "StandardNormal",
    "TorchBase",
]
