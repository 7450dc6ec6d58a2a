"""Bijectors: invertible maps from data to latent with their log-determinants."""

from flowkit.bijectors.autoregressive import (
    Autoregressive,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
)
from flowkit.bijectors.base import Bijector, Compose, Inverse, InverseNotAvailable
from flowkit.bijectors.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    channel_mask,
    checkerboard_mask,
)
from flowkit.bijectors.elementwise import (
    Affine,
    Elementwise,
    Exp,
    LeakyReLU,
    Logit,
    Sigmoid,
    Softplus,
    Tanh,
)
from flowkit.bijectors.interop import BijectorTransform, TransformBijector, from_transform
from flowkit.bijectors.linear import InvertibleConv1x1, Permute
from flowkit.bijectors.multiscale import FactorOut, Standardize, latent_shapes
from flowkit.bijectors.normalization import ActNorm
from flowkit.bijectors.reshape import Flatten, Reshape, Squeeze
from flowkit.bijectors.splines import RationalQuadraticSpline, SplineAutoregressive, SplineCoupling

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "Affine",
    "AffineCoupling",
    "Autoregressive",
    "Bijector",
    "BijectorTransform",
    "Compose",
    "Coupling",
    "Elementwise",
    "Exp",
    "FactorOut",
    "Flatten",
    "Inverse",
    "InverseAutoregressive",
    "InverseNotAvailable",
    "InvertibleConv1x1",
    "LeakyReLU",
    "Logit",
    "MaskedAffineAutoregressive",
    "Permute",
    "RationalQuadraticSpline",
    "Reshape",
    "Sigmoid",
    "Softplus",
    "SplineAutoregressive",
    "SplineCoupling",
    "Squeeze",
    "Standardize",
    "Tanh",
    "TransformBijector",
    "channel_mask",
    "checkerboard_mask",
    "from_transform",
    "latent_shapes",
]
