"""Distributions: Gaussian, mixture and uniform bases, torch-distribution wrappers, and the Flow."""

from flowkit.distributions.base import Distribution, TorchBase
from flowkit.distributions.flow import AuxiliaryLoss, Flow, FlowDistribution
from flowkit.distributions.mixture import MixtureOfGaussians
from flowkit.distributions.normal import ConditionalDiagonalNormal, DiagonalNormal, StandardNormal
from flowkit.distributions.uniform import UniformBox

__all__ = [
    "AuxiliaryLoss",
    "ConditionalDiagonalNormal",
    "DiagonalNormal",
    "Distribution",
    "Flow",
    "FlowDistribution",
    "MixtureOfGaussians",
    "StandardNormal",
    "TorchBase",
    "UniformBox",
]
