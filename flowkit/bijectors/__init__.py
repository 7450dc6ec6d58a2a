"""Bijectors: invertible maps from data to latent with their log-determinants."""

from flowkit.bijectors.autoregressive import (
    Autoregressive,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
)
from flowkit.bijectors.base import Bijector, Compose, Inverse, InverseNotAvailable
from flowkit.bijectors.cache import ParameterCache
from flowkit.bijectors.circular import CircularSplineAutoregressive, CircularSplineCoupling
from flowkit.bijectors.continuous import ContinuousFlow
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
    LogisticToNormal,
    Logit,
    Sigmoid,
    Softplus,
    Tanh,
)
from flowkit.bijectors.halves import SplitApply, SwapHalves
from flowkit.bijectors.interop import BijectorTransform, TransformBijector, from_transform
from flowkit.bijectors.linear import AffineConv1x1, InvertibleConv1x1, Permute
from flowkit.bijectors.linear_vector import (
    HouseholderLinear,
    LULinear,
    QRLinear,
    SVDLinear,
    householder_product,
)
from flowkit.bijectors.maps import (
    AdditiveMap,
    AffineMap,
    ElementwiseMap,
    LogisticMixtureCDF,
    SplineMap,
)
from flowkit.bijectors.multiscale import FactorOut, Standardize, latent_shapes
from flowkit.bijectors.neural import DeepDenseSigmoidMap, DeepSigmoidMap
from flowkit.bijectors.normalization import ActNorm, BatchNorm
from flowkit.bijectors.optimal_transport import ot_pairing
from flowkit.bijectors.planar import Planar
from flowkit.bijectors.precision import as_dtype_of, outside_autocast
from flowkit.bijectors.radial import Radial
from flowkit.bijectors.reshape import Flatten, Patchify, Reshape, Squeeze
from flowkit.bijectors.residual import FixedPointError, ResidualBlock
from flowkit.bijectors.spline_maps import (
    SPLINE_KINDS,
    CircularSplineMap,
    CubicSplineMap,
    LinearSplineMap,
    QuadraticSplineMap,
    spline_map,
)
from flowkit.bijectors.splines import RationalQuadraticSpline, SplineAutoregressive, SplineCoupling
from flowkit.bijectors.splits import ChannelSplit, CheckerboardSplit, MaskSplit, Split
from flowkit.bijectors.sylvester import (
    HouseholderSylvester,
    OrthogonalSylvester,
    TriangularSylvester,
)
from flowkit.bijectors.umnn import UMNNMap

__all__ = [
    "CircularSplineAutoregressive",
    "CircularSplineCoupling",
    "CircularSplineMap",
    "CubicSplineMap",
    "LinearSplineMap",
    "QuadraticSplineMap",
    "SPLINE_KINDS",
    "spline_map",
    "Split",
    "MaskSplit",
    "ChannelSplit",
    "CheckerboardSplit",
    "SplitApply",
    "LogisticToNormal",
    "SwapHalves",
    "SplineMap",
    "ElementwiseMap",
    "AffineMap",
    "AdditiveMap",
    "ActNorm",
    "AdditiveCoupling",
    "Affine",
    "AffineConv1x1",
    "AffineCoupling",
    "Autoregressive",
    "BatchNorm",
    "Bijector",
    "BijectorTransform",
    "Compose",
    "ContinuousFlow",
    "ot_pairing",
    "DeepDenseSigmoidMap",
    "DeepSigmoidMap",
    "Coupling",
    "Elementwise",
    "Exp",
    "FactorOut",
    "Flatten",
    "HouseholderLinear",
    "HouseholderSylvester",
    "Inverse",
    "InverseAutoregressive",
    "InverseNotAvailable",
    "InvertibleConv1x1",
    "LULinear",
    "LeakyReLU",
    "LogisticMixtureCDF",
    "Logit",
    "MaskedAffineAutoregressive",
    "OrthogonalSylvester",
    "ParameterCache",
    "Patchify",
    "Permute",
    "Planar",
    "as_dtype_of",
    "outside_autocast",
    "QRLinear",
    "Radial",
    "RationalQuadraticSpline",
    "Reshape",
    "ResidualBlock",
    "FixedPointError",
    "SVDLinear",
    "Sigmoid",
    "Softplus",
    "SplineAutoregressive",
    "SplineCoupling",
    "Squeeze",
    "Standardize",
    "Tanh",
    "TransformBijector",
    "TriangularSylvester",
    "UMNNMap",
    "channel_mask",
    "checkerboard_mask",
    "from_transform",
    "householder_product",
    "latent_shapes",
]
