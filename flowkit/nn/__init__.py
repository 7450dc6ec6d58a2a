"""Networks used inside bijectors: conditioners, prior networks, zero-initialised layers."""

from flowkit.nn.actnorm import ActNorm
from flowkit.nn.conv import EdgeConv2d, LinearZeros, ZeroConv2d
from flowkit.nn.convattn import ConvAttn, ConvAttnBlock, GatedConv, GatedConvNet
from flowkit.nn.features import CheckerboardFeatures
from flowkit.nn.glow import GlowConditioner, GlowTopPrior
from flowkit.nn.lipschitz import (
    LipschitzConvNet,
    LipschitzMLP,
    LipSwish,
    SpectralNormConv2d,
    SpectralNormLinear,
    refresh_spectral_norm,
)
from flowkit.nn.made import MADE, MaskedLinear, autoregressive_order
from flowkit.nn.masked import MaskedInput
from flowkit.nn.mlp import MLP
from flowkit.nn.resnet import ResNet, ResNetBlock
from flowkit.nn.scale import ScaledTanh
from flowkit.nn.transformer import CausalTransformer
from flowkit.nn.vector_field import VectorFieldMLP

__all__ = [
    "ActNorm",
    "CheckerboardFeatures",
    "ConvAttn",
    "ConvAttnBlock",
    "GatedConv",
    "GatedConvNet",
    "CausalTransformer",
    "EdgeConv2d",
    "GlowConditioner",
    "GlowTopPrior",
    "LinearZeros",
    "LipSwish",
    "LipschitzConvNet",
    "LipschitzMLP",
    "MADE",
    "MLP",
    "MaskedInput",
    "MaskedLinear",
    "ResNet",
    "ResNetBlock",
    "ScaledTanh",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "VectorFieldMLP",
    "ZeroConv2d",
    "autoregressive_order",
    "refresh_spectral_norm",
]
