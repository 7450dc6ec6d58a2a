"""Bijectors: invertible maps from data to latent with their log-determinants."""

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
from flowkit.bijectors.linear import AffineConv1x1, InvertibleConv1x1, Permute
from flowkit.bijectors.multiscale import FactorOut, Standardize, latent_shapes
from flowkit.bijectors.normalization import ActNorm
from flowkit.bijectors.reshape import Flatten, Reshape, Squeeze

__all__ = [
    "ActNorm",
    "AffineConv1x1",
    "AdditiveCoupling",
    "Affine",
    "AffineCoupling",
    "Bijector",
    "BijectorTransform",
    "Compose",
    "Coupling",
    "Elementwise",
    "Exp",
    "FactorOut",
    "Flatten",
    "Inverse",
    "InverseNotAvailable",
    "InvertibleConv1x1",
    "LeakyReLU",
    "Logit",
    "Permute",
    "Reshape",
    "Sigmoid",
    "Softplus",
    "Squeeze",
    "Standardize",
    "Tanh",
    "TransformBijector",
    "channel_mask",
    "checkerboard_mask",
    "from_transform",
    "latent_shapes",
]
