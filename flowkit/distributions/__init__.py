"""Distributions: bases, torch-distribution wrappers, the Flow, and dequantized integer images."""

from flowkit.distributions.base import Distribution, TorchBase
from flowkit.distributions.circular import CircularUniform, VonMises
from flowkit.distributions.dequantized import (
    Dequantized,
    VariationalDequantizer,
    uniform_noise,
)
from flowkit.distributions.flow import AuxiliaryLoss, Flow, FlowDistribution, TrainingLoss
from flowkit.distributions.mixture import MixtureOfGaussians
from flowkit.distributions.normal import ConditionalDiagonalNormal, DiagonalNormal, StandardNormal
from flowkit.distributions.uniform import UniformBox

__all__ = [
    "CircularUniform",
    "VonMises",
    "AuxiliaryLoss",
    "ConditionalDiagonalNormal",
    "Dequantized",
    "DiagonalNormal",
    "Distribution",
    "Flow",
    "FlowDistribution",
    "MixtureOfGaussians",
    "StandardNormal",
    "TorchBase",
    "TrainingLoss",
    "UniformBox",
    "VariationalDequantizer",
    "uniform_noise",
]
