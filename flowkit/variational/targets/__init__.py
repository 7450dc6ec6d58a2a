"""Benchmark densities for variational inference, each with its log Z where known."""

from flowkit.variational.targets.base import Target
from flowkit.variational.targets.funnel import Funnel
from flowkit.variational.targets.gaussian import Gaussian
from flowkit.variational.targets.mixture import GaussianMixture, gmm40
from flowkit.variational.targets.toy import RingMixture, TwoMoons
from flowkit.variational.targets.wells import DoubleWell, ManyWell, double_well_log_z

__all__ = [
    "DoubleWell",
    "Funnel",
    "Gaussian",
    "GaussianMixture",
    "ManyWell",
    "RingMixture",
    "Target",
    "TwoMoons",
    "double_well_log_z",
    "gmm40",
]
