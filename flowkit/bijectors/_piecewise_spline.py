"""Monotone piecewise-linear, -quadratic and -cubic spline math, and circular spline knots."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.bijectors._rq_spline import (
    _DERIVATIVE_SHIFT,
    MIN_BIN_HEIGHT,
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    SplineKnots,
    _bin_of,
    _knot_positions,
    rq_spline_forward,
    rq_spline_inverse,
)

__all__ = [
    "CUBIC_INVERSE_ITERATIONS",
    "circular_spline_forward",
    "circular_spline_inverse",
    "cubic_spline_forward",
    "cubic_spline_inverse",
    "linear_spline_forward",
    "linear_spline_inverse",
    "quadratic_spline_forward",
    "quadratic_spline_inverse",
    "wrap_angle",
]

# Most safeguarded-Newton steps of the cubic inverse. Each step at least halves the bracket of
# the bin-relative position (a bisection when the Newton step leaves it), so 60 steps reach
# 2^-60 < float64's resolution even without Newton's quadratic convergence, which in practice
# stops the loop after 4 to 6 steps.
CUBIC_INVERSE_ITERATIONS = 60
# sigmoid(0 + shift) = 1/3: zero raw end parameters give an end derivative equal to the end bin's
# slope (a third of Fritsch and Carlson's bound 3 s), which with equal bins is the identity.
_END_DERIVATIVE_SHIFT = -math.log(2.0)


def _gather(tables: tuple[Tensor, ...], index: Tensor, shape: torch.Size) -> list[Tensor]:
    """Entries ``index`` and ``index + 1`` of each knot table, at the broadcast ``shape``."""
    both = torch.cat([index, index + 1], dim=-1)
    found = []
    for table in tables:
        pair = table.expand(shape + table.shape[-1:]).gather(-1, both)
        found += [pair[..., 0], pair[..., 1]]
    return found


def _prepare(value: Tensor, knots: Tensor, tail_bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """The broadcast value, the mask of values in ``[-B, B]`` and the values clamped into it."""
    shape = torch.broadcast_shapes(value.shape, knots.shape[:-1])
    value = value.expand(shape)
    inside = (value >= -tail_bound) & (value <= tail_bound)
    # Tail values are evaluated at the bound and discarded, so no branch sees one that overflows.
    return value, inside, value.clamp(-tail_bound, tail_bound)


def _finish(inside: Tensor, mapped: Tensor, value: Tensor, log_derivative: Tensor):
    return torch.where(inside, mapped, value), torch.where(
        inside, log_derivative, torch.zeros_like(value)
    )


def _within(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
    # Rounding can carry a value computed at the end of a bin an ulp past its knot, and one past
    # the last knot would be read back as a tail value by the inverse.
    # The correction is detached: the clamped value keeps the map's own derivative.
    clamped = torch.where(value > high, high, torch.where(value < low, low, value))
    return value - (value - clamped).detach()


def _uniform_knots(raw: Tensor, tail_bound: float) -> Tensor:
    bins = raw.shape[-1]
    steps = torch.arange(bins + 1, dtype=raw.dtype, device=raw.device)
    return (2.0 * tail_bound / bins) * steps - tail_bound


# --- piecewise linear (Müller et al. 2019) --------------------------------------------------------
def linear_spline_forward(x: Tensor, raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""Piecewise-linear map of ``K`` equal-width bins on :math:`[-B, B]`, identity outside.

    ``raw`` ``(*batch, K)``: bin :math:`k` receives the fraction :math:`q_k` (a softmax, floored at
    ``MIN_BIN_HEIGHT``) of the output interval, so its slope is :math:`K q_k`.
    """
    x_knots = _uniform_knots(raw, tail_bound)
    y_knots = _knot_positions(raw, tail_bound, MIN_BIN_HEIGHT)
    x, inside, x_in = _prepare(x, y_knots, tail_bound)
    index = _bin_of(x_in, x_knots.expand(y_knots.shape))
    x_k, x_k1, y_k, y_k1 = _gather((x_knots.expand(y_knots.shape), y_knots), index, x.shape)
    slope = (y_k1 - y_k) / (x_k1 - x_k)
    return _finish(inside, _within(y_k + (x_in - x_k) * slope, y_k, y_k1), x, torch.log(slope))


def linear_spline_inverse(y: Tensor, raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`linear_spline_forward`, direct: ``x = x_k + (y - y_k) / slope``."""
    y_knots = _knot_positions(raw, tail_bound, MIN_BIN_HEIGHT)
    x_knots = _uniform_knots(raw, tail_bound).expand(y_knots.shape)
    y, inside, y_in = _prepare(y, y_knots, tail_bound)
    x_k, x_k1, y_k, y_k1 = _gather((x_knots, y_knots), _bin_of(y_in, y_knots), y.shape)
    slope = (y_k1 - y_k) / (x_k1 - x_k)
    return _finish(inside, x_k + (y_in - y_k) / slope, y, -torch.log(slope))


# --- piecewise quadratic (Müller et al. 2019) -----------------------------------------------------
def _quadratic_knots(raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """X knots, y knots and the derivative (the density's vertex values) at each knot."""
    bins = (raw.shape[-1] - 1) // 2
    x = _knot_positions(raw[..., :bins], tail_bound, MIN_BIN_WIDTH)
    widths = (x[..., 1:] - x[..., :-1]) / (2.0 * tail_bound)
    vertices = MIN_DERIVATIVE + F.softplus(raw[..., bins:] + _DERIVATIVE_SHIFT)
    # The density of the normalised output is piecewise linear through the vertices; dividing by
    # its area makes it integrate to 1, so the map covers [-B, B] exactly.
    areas = 0.5 * (vertices[..., :-1] + vertices[..., 1:]) * widths
    vertices = vertices / areas.sum(dim=-1, keepdim=True)
    cumulative = F.pad(torch.cumsum(areas / areas.sum(dim=-1, keepdim=True), dim=-1), (1, 0))
    inner = 2.0 * tail_bound * cumulative[..., 1:-1] - tail_bound
    low = torch.full_like(cumulative[..., :1], -tail_bound)
    return x, torch.cat([low, inner, -low], dim=-1), vertices


def quadratic_spline_forward(x: Tensor, raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""Piecewise-quadratic map (a piecewise-linear density's CDF) on :math:`[-B, B]`.

    ``raw`` ``(*batch, 2K + 1)``: ``K`` raw widths, then the ``K + 1`` raw derivatives at the knots
    (softplus plus ``MIN_DERIVATIVE``, rescaled so that the bins' areas add up to the interval).
    In bin :math:`k` with :math:`\alpha = (x - x_k) / w_k`,
    :math:`y = y_k + w_k (v_k \alpha + (v_{k+1} - v_k) \alpha^2 / 2)` and
    :math:`y' = v_k + (v_{k+1} - v_k) \alpha`.
    """
    x_knots, y_knots, vertices = _quadratic_knots(raw, tail_bound)
    x, inside, x_in = _prepare(x, y_knots, tail_bound)
    x_k, x_k1, y_k, y_k1, v_k, v_k1 = _gather(
        (x_knots, y_knots, vertices), _bin_of(x_in, x_knots), x.shape
    )
    width = x_k1 - x_k
    alpha = (x_in - x_k) / width
    y = _within(y_k + width * alpha * (v_k + 0.5 * (v_k1 - v_k) * alpha), y_k, y_k1)
    return _finish(inside, y, x, torch.log(v_k + (v_k1 - v_k) * alpha))


def quadratic_spline_inverse(y: Tensor, raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""The inverse of :func:`quadratic_spline_forward`, in closed form.

    :math:`\alpha` solves :math:`a \alpha^2 + b \alpha = \Delta` with :math:`a = w_k (v_{k+1} -
    v_k) / 2`, :math:`b = w_k v_k > 0` and :math:`\Delta = y - y_k \ge 0`; the root is taken as
    :math:`\alpha = 2 \Delta / (b + \sqrt{b^2 + 4 a \Delta})`, a sum of non-negative terms that
    never cancels (the textbook form does when :math:`a` is small).
    """
    x_knots, y_knots, vertices = _quadratic_knots(raw, tail_bound)
    y, inside, y_in = _prepare(y, y_knots, tail_bound)
    x_k, x_k1, y_k, _, v_k, v_k1 = _gather(
        (x_knots, y_knots, vertices), _bin_of(y_in, y_knots), y.shape
    )
    width = x_k1 - x_k
    offset = y_in - y_k
    a = 0.5 * width * (v_k1 - v_k)
    b = width * v_k
    # b^2 + 4 a offset = (w v(x))^2 >= 0 within the bin; rounding can push it a hair below.
    root = (b.square() + 4.0 * a * offset).clamp_min(0.0).sqrt()
    alpha = 2.0 * offset / (b + root)
    return _finish(inside, x_k + alpha * width, y, -torch.log(v_k + (v_k1 - v_k) * alpha))


# --- piecewise cubic (Durkan et al. 2019, cubic-spline flows) -------------------------------------
def _cubic_knots(raw: Tensor, tail_bound: float) -> SplineKnots:
    """Knots and Steffen's derivatives of a monotone cubic Hermite spline."""
    bins = (raw.shape[-1] - 2) // 2
    x = _knot_positions(raw[..., :bins], tail_bound, MIN_BIN_WIDTH)
    y = _knot_positions(raw[..., bins : 2 * bins], tail_bound, MIN_BIN_HEIGHT)
    widths = x[..., 1:] - x[..., :-1]
    slopes = (y[..., 1:] - y[..., :-1]) / widths
    # Steffen (1990): at an inner knot, the slope of the parabola through the three knots, capped
    # at twice either neighbouring secant slope, keeps every bin monotone.
    left, right = slopes[..., :-1], slopes[..., 1:]
    w_left, w_right = widths[..., :-1], widths[..., 1:]
    parabola = (left * w_right + right * w_left) / (w_left + w_right)
    inner = torch.minimum(torch.minimum(2.0 * left, 2.0 * right), parabola)
    # The ends: a fraction (0, 3) of the end bin's slope, within Fritsch and Carlson's bound.
    ends = 3.0 * torch.sigmoid(raw[..., 2 * bins :] + _END_DERIVATIVE_SHIFT)
    low = ends[..., :1] * slopes[..., :1]
    high = ends[..., 1:] * slopes[..., -1:]
    return SplineKnots(x, y, torch.cat([low, inner, high], dim=-1))


def _cubic_terms(t: Tensor, slope: Tensor, d_k: Tensor, d_k1: Tensor) -> tuple[Tensor, Tensor]:
    """``(y - y_k) / w`` and ``dy/dx`` of the Hermite cubic at bin position ``t``."""
    c2 = 3.0 * slope - 2.0 * d_k - d_k1
    c3 = d_k + d_k1 - 2.0 * slope
    return t * (d_k + t * (c2 + t * c3)), d_k + t * (2.0 * c2 + 3.0 * c3 * t)


def cubic_spline_forward(x: Tensor, raw: Tensor, tail_bound: float) -> tuple[Tensor, Tensor]:
    r"""Monotone piecewise-cubic (Hermite) map on :math:`[-B, B]`, identity outside.

    ``raw`` ``(*batch, 2K + 2)``: ``K`` raw widths, ``K`` raw heights, and 2 raw end derivatives.
    Inner derivatives follow Steffen's method. In bin :math:`k` with :math:`t = (x - x_k) / w_k`
    and :math:`s_k = h_k / w_k`,
    :math:`y = y_k + w_k [d_k t + (3 s_k - 2 d_k - d_{k+1}) t^2 + (d_k + d_{k+1} - 2 s_k) t^3]`.
    """
    knots = _cubic_knots(raw, tail_bound)
    x, inside, x_in = _prepare(x, knots.x, tail_bound)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = _gather(tuple(knots), _bin_of(x_in, knots.x), x.shape)
    width = x_k1 - x_k
    t = (x_in - x_k) / width
    rise, derivative = _cubic_terms(t, (y_k1 - y_k) / width, d_k, d_k1)
    return _finish(inside, _within(y_k + width * rise, y_k, y_k1), x, torch.log(derivative))


def cubic_spline_inverse(
    y: Tensor, raw: Tensor, tail_bound: float, tolerance: float | None = None
) -> tuple[Tensor, Tensor]:
    r"""The inverse of :func:`cubic_spline_forward`, by safeguarded Newton within the bin.

    The bin-relative position :math:`t \in [0, 1]` is bracketed; each step takes Newton's step
    when it stays inside the bracket and bisects otherwise, until no step moves :math:`t` by more
    than ``tolerance`` (``1e-12`` in float64, ``1e-6`` otherwise; at most
    :data:`CUBIC_INVERSE_ITERATIONS` steps). Gradients flow by the implicit function theorem
    (one Newton step under autograd whose value change is below the tolerance).
    """
    knots = _cubic_knots(raw, tail_bound)
    y, inside, y_in = _prepare(y, knots.y, tail_bound)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = _gather(tuple(knots), _bin_of(y_in, knots.y), y.shape)
    width = x_k1 - x_k
    slope = (y_k1 - y_k) / width
    target = (y_in - y_k) / width
    if tolerance is None:
        tolerance = 1e-12 if y.dtype == torch.float64 else 1e-6
    with torch.no_grad():
        s, a, b, goal = slope.detach(), d_k.detach(), d_k1.detach(), target.detach()
        low, high = torch.zeros_like(goal), torch.ones_like(goal)
        t = (goal / s).clamp(0.0, 1.0)
        for _ in range(CUBIC_INVERSE_ITERATIONS):
            rise, derivative = _cubic_terms(t, s, a, b)
            above = rise > goal
            high = torch.where(above, t, high)
            low = torch.where(above, low, t)
            step = t - (rise - goal) / derivative
            bisect = 0.5 * (low + high)
            new = torch.where((step > low) & (step < high), step, bisect)
            moved = float((new - t).abs().max()) if new.numel() else 0.0
            t = new
            if moved <= tolerance:
                break
    rise, derivative = _cubic_terms(t, slope, d_k, d_k1)
    # A Newton step under autograd: x keeps its value to the tolerance and gains the implicit
    # gradient -(d rise / d theta) / (d rise / d t).
    t = t + (target - rise) / derivative
    _, derivative = _cubic_terms(t, slope, d_k, d_k1)
    return _finish(inside, x_k + t * width, y, -torch.log(derivative))


# --- circular rational-quadratic (Rezende et al. 2020) --------------------------------------------
def wrap_angle(value: Tensor) -> Tensor:
    r"""``value`` moved by a multiple of :math:`2\pi` into :math:`[-\pi, \pi)`.

    Values already there are returned as they are (bit for bit), so maps that wrap stay exactly
    invertible on their domain.
    """
    outside = (value < -math.pi) | (value >= math.pi)
    wrapped = torch.remainder(value + math.pi, 2.0 * math.pi) - math.pi
    # remainder can round up to 2 pi itself for a value a hair below a multiple of it.
    wrapped = torch.where(wrapped >= math.pi, wrapped - 2.0 * math.pi, wrapped)
    return torch.where(outside, wrapped, value)


def circular_spline_knots(raw: Tensor) -> tuple[SplineKnots, Tensor]:
    r"""Knots of a circular spline on :math:`[-\pi, \pi]` and its rotation.

    ``raw`` ``(*batch, 3K + 1)``: ``K`` raw widths, ``K`` raw heights, ``K`` raw derivatives (the
    first at :math:`\pm\pi`, shared by both ends, then the ``K - 1`` inner ones) and the rotation.
    """
    bins = (raw.shape[-1] - 1) // 3
    x = _knot_positions(raw[..., :bins], math.pi, MIN_BIN_WIDTH)
    y = _knot_positions(raw[..., bins : 2 * bins], math.pi, MIN_BIN_HEIGHT)
    derivatives = MIN_DERIVATIVE + F.softplus(raw[..., 2 * bins : 3 * bins] + _DERIVATIVE_SHIFT)
    ends = derivatives[..., :1]
    knots = SplineKnots(x, y, torch.cat([ends, derivatives[..., 1:], ends], dim=-1))
    return knots, raw[..., 3 * bins]


def circular_spline_forward(x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`y = \mathrm{wrap}(g(\mathrm{wrap}(x)) + \phi)`, ``g`` a rational-quadratic spline.

    ``g`` fixes :math:`\pm\pi` and has equal derivatives there, so the map is a smooth
    diffeomorphism of the circle; :math:`\phi` rotates it.
    """
    knots, rotation = circular_spline_knots(raw)
    y, log_derivative = rq_spline_forward(wrap_angle(x), knots, math.pi)
    return wrap_angle(y + rotation), log_derivative


def circular_spline_inverse(y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`x = g^{-1}(\mathrm{wrap}(y - \phi))` in closed form (the spline's quadratic)."""
    knots, rotation = circular_spline_knots(raw)
    x, log_derivative = rq_spline_inverse(wrap_angle(y - rotation), knots, math.pi)
    return wrap_angle(x), log_derivative
