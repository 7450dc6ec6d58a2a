"""Monotone rational-quadratic spline math, linear tails: knots, forward, closed-form inverse."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MIN_BIN_HEIGHT",
    "MIN_BIN_WIDTH",
    "MIN_DERIVATIVE",
    "SplineKnots",
    "rq_spline_forward",
    "rq_spline_inverse",
    "spline_knots",
    "spline_params_per_element",
]

# Each bin keeps at least this fraction of the interval [-B, B], so the bin-relative position
# (x - x_k) / w_k and the bin slope h_k / w_k stay bounded however the raw parameters move.
MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
# Floor of the derivative at the inner knots: keeps the spline strictly increasing and its
# log-derivative finite (the Neural Spline Flows code uses the same value).
MIN_DERIVATIVE = 1e-3
# softplus(0 + shift) + MIN_DERIVATIVE = 1: zero raw parameters give unit derivatives, which with
# equal bins make the spline the identity (so zero-initialised conditioners start at identity).
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


class SplineKnots(NamedTuple):
    """Knots of a monotone spline, each of shape ``(*batch, K + 1)``.

    ``x`` and ``y`` run from ``-B`` to ``B`` (both ends exact); ``derivative`` is the slope at each
    knot, 1 at both ends to match the identity tails.
    """

    x: Tensor
    y: Tensor
    derivative: Tensor


def spline_params_per_element(bins: int) -> int:
    """Raw parameters per element: ``K`` widths, ``K`` heights and ``K - 1`` derivatives."""
    return 3 * bins - 1


def _knot_positions(raw: Tensor, tail_bound: float, min_size: float) -> Tensor:
    bins = raw.shape[-1]
    sizes = min_size + (1.0 - min_size * bins) * torch.softmax(raw, dim=-1)
    cumulative = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    inner = 2.0 * tail_bound * cumulative[..., 1:-1] - tail_bound
    # The ends are set exactly: a rounded cumulative sum would leave a gap of a few ulps at the
    # last knot, into which an input equal to B would fall.
    low = torch.full_like(cumulative[..., :1], -tail_bound)
    return torch.cat([low, inner, -low], dim=-1)


def spline_knots(
    raw_widths: Tensor, raw_heights: Tensor, raw_derivatives: Tensor, *, tail_bound: float
) -> SplineKnots:
    r"""Knots of a monotone rational-quadratic spline on :math:`[-B, B]` from raw parameters.

    Bin widths and heights are softmaxes of ``raw_widths`` and ``raw_heights``, floored at
    :data:`MIN_BIN_WIDTH` and :data:`MIN_BIN_HEIGHT` and scaled to :math:`2B`; the inner
    derivatives are :math:`\delta_{\min} + \mathrm{softplus}(\cdot)` with :data:`MIN_DERIVATIVE`,
    shifted so that zero parameters give the identity. The end derivatives are 1.

    Args:
        raw_widths: ``(*batch, K)``.
        raw_heights: ``(*batch, K)``.
        raw_derivatives: ``(*batch, K - 1)``.
        tail_bound: :math:`B > 0`.

    Returns:
        The knots, each of shape ``(*batch, K + 1)``.
    """
    bins = raw_widths.shape[-1]
    if raw_heights.shape[-1] != bins or raw_derivatives.shape[-1] != bins - 1:
        raise ValueError(
            f"spline_knots expects {bins} widths, {bins} heights and {bins - 1} derivatives, got "
            f"{raw_widths.shape[-1]}, {raw_heights.shape[-1]} and {raw_derivatives.shape[-1]}"
        )
    x = _knot_positions(raw_widths, tail_bound, MIN_BIN_WIDTH)
    y = _knot_positions(raw_heights, tail_bound, MIN_BIN_HEIGHT)
    inner = MIN_DERIVATIVE + F.softplus(raw_derivatives + _DERIVATIVE_SHIFT)
    ends = torch.ones_like(inner[..., :1])
    return SplineKnots(x, y, torch.cat([ends, inner, ends], dim=-1))


def _bin_of(value: Tensor, knots: Tensor) -> Tensor:
    # Counting inner knots <= value puts every value of [-B, B] in a bin 0..K-1: B itself lands in
    # the last bin (no search past the last knot), and a value on an inner knot k starts bin k.
    return (value.unsqueeze(-1) >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)


def _gather_bin(knots: SplineKnots, index: Tensor, shape: torch.Size) -> tuple[Tensor, ...]:
    both = torch.cat([index, index + 1], dim=-1)
    found = []
    for table in knots:
        pair = table.expand(shape + table.shape[-1:]).gather(-1, both)
        found += [pair[..., 0], pair[..., 1]]
    return tuple(found)


def _log_derivative(
    xi: Tensor, slope: Tensor, d_low: Tensor, d_high: Tensor, denominator: Tensor
) -> Tensor:
    # dy/dx = s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / denominator^2  (paper, eq. 5)
    one_minus = 1.0 - xi
    numerator = d_high * xi.square() + 2.0 * slope * xi * one_minus + d_low * one_minus.square()
    return 2.0 * torch.log(slope) + torch.log(numerator) - 2.0 * torch.log(denominator)


def rq_spline_forward(x: Tensor, knots: SplineKnots, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""Apply the spline elementwise; identity outside :math:`[-B, B]`.

    In bin :math:`k`, with :math:`\xi = (x - x_k) / w_k`, :math:`s_k = h_k / w_k`,

    .. math::
        y = y_k + \frac{h_k [s_k \xi^2 + d_k \xi (1 - \xi)]}
                       {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)}.

    Args:
        x: Input of any shape that broadcasts with the knots' batch shape.
        knots: From :func:`spline_knots`.
        tail_bound: :math:`B`.

    Returns:
        ``(y, log_derivative)``, both of the broadcast shape.
    """
    shape = torch.broadcast_shapes(x.shape, knots.x.shape[:-1])
    x = x.expand(shape)
    inside = (x >= -tail_bound) & (x <= tail_bound)
    # Tail inputs are evaluated at the bound and then discarded, so no branch ever sees a value
    # that could overflow (a NaN in the unused branch of torch.where would poison the gradient).
    x_in = x.clamp(-tail_bound, tail_bound)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = _gather_bin(knots, _bin_of(x_in, knots.x), shape)
    width, height = x_k1 - x_k, y_k1 - y_k
    slope = height / width
    # In [0, 1] without clamping: x_k <= x_in <= x_{k+1}, and rounding is monotone.
    xi = (x_in - x_k) / width
    xi_one_minus_xi = xi * (1.0 - xi)
    denominator = slope + (d_k1 + d_k - 2.0 * slope) * xi_one_minus_xi
    y = y_k + height * (slope * xi.square() + d_k * xi_one_minus_xi) / denominator
    log_derivative = _log_derivative(xi, slope, d_k, d_k1, denominator)
    return torch.where(inside, y, x), torch.where(inside, log_derivative, torch.zeros_like(x))


def rq_spline_inverse(y: Tensor, knots: SplineKnots, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""Invert the spline elementwise in closed form; identity outside :math:`[-B, B]`.

    In bin :math:`k` the position :math:`\xi` solves :math:`a \xi^2 + b \xi + c = 0` with
    :math:`\Delta = d_{k+1} + d_k - 2 s_k`, :math:`a = h_k (s_k - d_k) + (y - y_k) \Delta`,
    :math:`b = h_k d_k - (y - y_k) \Delta`, :math:`c = -s_k (y - y_k)`. The root in
    :math:`[0, 1]` is :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})` for :math:`b \ge 0` and the
    equal :math:`\xi = (-b + \sqrt{b^2 - 4ac}) / (2a)` for :math:`b < 0`: each form adds terms
    of one sign only, so neither cancels (the first alone loses most digits when :math:`b < 0`).

    Returns:
        ``(x, log_derivative)`` where ``log_derivative`` is that of the inverse map (minus the
        forward one at ``x``).
    """
    shape = torch.broadcast_shapes(y.shape, knots.y.shape[:-1])
    y = y.expand(shape)
    inside = (y >= -tail_bound) & (y <= tail_bound)
    y_in = y.clamp(-tail_bound, tail_bound)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = _gather_bin(knots, _bin_of(y_in, knots.y), shape)
    width, height = x_k1 - x_k, y_k1 - y_k
    slope = height / width
    offset = y_in - y_k
    curvature = d_k1 + d_k - 2.0 * slope
    a = height * (slope - d_k) + offset * curvature
    b = height * d_k - offset * curvature
    c = -slope * offset
    # The discriminant is positive for a monotone spline; rounding can push it a hair below zero.
    discriminant = (b.square() - 4.0 * a * c).clamp_min(0.0)
    # The root in [0, 1] has two equal forms, 2c / (-b - sqrt(D)) and (-b + sqrt(D)) / (2a); each
    # is free of cancellation for one sign of b (for b < 0, -b - sqrt(D) cancels: in float32 it
    # cost up to 200 ulps of x near a knot between a flat and a steep bin). For b < 0 the
    # equation forces a > h s > 0. The quotient is taken after the choice, so the unused form
    # never divides.
    root = discriminant.sqrt()
    negative_b = b < 0
    numerator = torch.where(negative_b, root - b, 2.0 * c)
    denominator = torch.where(negative_b, 2.0 * a, -b - root)
    # Not clamped to [0, 1]: at a knot the root may land an ulp outside, and a clamp there would
    # zero the derivative of the inverse.
    xi = numerator / denominator
    x = x_k + xi * width
    denominator = slope + curvature * xi * (1.0 - xi)
    log_derivative = -_log_derivative(xi, slope, d_k, d_k1, denominator)
    return torch.where(inside, x, y), torch.where(inside, log_derivative, torch.zeros_like(y))
