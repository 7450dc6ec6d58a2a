"""Networks used inside bijectors: conditioners, prior networks, zero-initialised layers."""

from flowkit.nn.conv import EdgeConv2d, LinearZeros, ZeroConv2d
from flowkit.nn.glow import GlowConditioner, GlowTopPrior
from flowkit.nn.made import MADE, MaskedLinear, autoregressive_order
from flowkit.nn.mlp import MLP

__all__ = [
    "EdgeConv2d",
    "GlowConditioner",
    "GlowTopPrior",
    "LinearZeros",
    "MADE",
    "MLP",
    "MaskedLinear",
    "ZeroConv2d",
    "autoregressive_order",
]
