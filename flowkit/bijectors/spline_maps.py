"""Spline maps beside the rational-quadratic one: piecewise linear, quadratic, cubic, circular.

Each is an :class:`~flowkit.bijectors.ElementwiseMap`, so every coupling and autoregressive
bijector takes it in place of :class:`~flowkit.bijectors.SplineMap`.
"""

from __future__ import annotations

import math

from torch import Tensor

from flowkit._checks import check_choice, check_float
from flowkit.bijectors._piecewise_spline import (
    circular_spline_forward,
    circular_spline_inverse,
    cubic_spline_forward,
    cubic_spline_inverse,
    linear_spline_forward,
    linear_spline_inverse,
    quadratic_spline_forward,
    quadratic_spline_inverse,
)
from flowkit.bijectors.maps import ElementwiseMap, Params, SplineMap, check_spline_options

__all__ = [
    "SPLINE_KINDS",
    "CircularSplineMap",
    "CubicSplineMap",
    "LinearSplineMap",
    "QuadraticSplineMap",
    "spline_map",
]

SPLINE_KINDS = ("rational_quadratic", "linear", "quadratic", "cubic")
"""The monotone spline maps of the real line, by the name ``spline_map`` and the presets take."""


class _IntervalSpline(ElementwiseMap):
    """A monotone spline on ``[-B, B]`` whose raw parameters sit on the last axis."""

    def __init__(self, *, bins: int = 8, tail_bound: float = 3.0) -> None:
        super().__init__()
        check_spline_options(type(self).__name__, bins, tail_bound)
        self.bins = bins
        self.tail_bound = float(tail_bound)
        self.params_per_element = self._count(bins)

    @staticmethod
    def _count(bins: int) -> int:
        raise NotImplementedError

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """Move each element's raw parameters from ``dim`` to the last axis."""
        return (theta.movedim(dim, -1),)

    def extra_repr(self) -> str:
        """Bins and tail bound, for ``repr``."""
        return f"bins={self.bins}, tail_bound={self.tail_bound}"


class LinearSplineMap(_IntervalSpline):
    r"""Monotone piecewise-linear map with :math:`K` equal-width bins on :math:`[-B, B]`.

    The CDF of a piecewise-constant density (Müller et al.'s piecewise-linear coupling), scaled to
    :math:`[-B, B]`. Each element has :math:`P = K` raw parameters; bin :math:`k` maps onto the
    fraction :math:`q_k = \mathrm{softmax}(\cdot)_k` of the interval (at least
    ``MIN_BIN_HEIGHT``), so its slope is :math:`K q_k` and :math:`\log g' = \log(K q_k)`. All
    zero is the identity. Identity outside :math:`[-B, B]`; the inverse is direct,
    :math:`x = x_k + (y - y_k) / (K q_k)`. The derivative jumps at the knots (the density of a
    flow built of these is discontinuous there).

    Args:
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.

    References:
        Müller, McWilliams, Rousselle, Gross & Novák, Neural Importance Sampling (2019).

    Example:
        >>> import torch
        >>> spline = LinearSplineMap(bins=4)
        >>> spline(torch.tensor([0.5]), (torch.zeros(1, 4),))[0]  # zero parameters: the identity
        tensor([0.5000])
    """

    @staticmethod
    def _count(bins: int) -> int:
        return bins

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Evaluate the map at ``x``; return ``y`` and the log-derivative."""
        return linear_spline_forward(x, params[0], self.tail_bound)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the map at ``y``; return ``x`` and the log-derivative of the inverse."""
        return linear_spline_inverse(y, params[0], self.tail_bound)


class QuadraticSplineMap(_IntervalSpline):
    r"""Monotone piecewise-quadratic map with :math:`K` bins on :math:`[-B, B]`.

    The CDF of a piecewise-linear density (Müller et al.'s piecewise-quadratic coupling), scaled to
    :math:`[-B, B]`. Each element has :math:`P = 2K + 1` raw parameters: ``K`` widths (softmax, at
    least ``MIN_BIN_WIDTH``), then the ``K + 1`` derivatives at the knots (softplus plus
    ``MIN_DERIVATIVE``, divided by the area under them so the bins fill the interval). In bin
    :math:`k`, with :math:`\alpha = (x - x_k) / w_k`,

    .. math::
        y = y_k + w_k \big(v_k \alpha + \tfrac12 (v_{k+1} - v_k) \alpha^2\big), \qquad
        g'(x) = v_k + (v_{k+1} - v_k) \alpha.

    All zero is the identity. Identity outside :math:`[-B, B]` (the end derivatives are learned,
    so the derivative may jump there). The inverse solves the quadratic in closed form with the
    root written as :math:`2\Delta / (b + \sqrt{b^2 + 4a\Delta})`, which never cancels.

    Args:
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.

    References:
        Müller, McWilliams, Rousselle, Gross & Novák, Neural Importance Sampling (2019).

    Example:
        >>> import torch
        >>> spline = QuadraticSplineMap(bins=4)
        >>> spline(torch.tensor([0.5]), (torch.zeros(1, 9),))[0]
        tensor([0.5000])
    """

    @staticmethod
    def _count(bins: int) -> int:
        return 2 * bins + 1

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Evaluate the map at ``x``; return ``y`` and the log-derivative."""
        return quadratic_spline_forward(x, params[0], self.tail_bound)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the map at ``y`` in closed form; return ``x`` and its log-derivative."""
        return quadratic_spline_inverse(y, params[0], self.tail_bound)


class CubicSplineMap(_IntervalSpline):
    r"""Monotone piecewise-cubic (Hermite) map with :math:`K` bins on :math:`[-B, B]`.

    Each element has :math:`P = 2K + 2` raw parameters: ``K`` widths, ``K`` heights (softmaxes,
    floored as the rational-quadratic spline's) and 2 raw end derivatives, each end's derivative
    being :math:`3\sigma(\cdot - \log 2)` times its bin's slope. The inner derivatives follow
    Steffen's method (capped at twice either neighbouring slope), which keeps every bin strictly
    monotone. In bin :math:`k`, with :math:`t = (x - x_k) / w_k` and :math:`s_k = h_k / w_k`,

    .. math::
        y = y_k + w_k \big[d_k t + (3 s_k - 2 d_k - d_{k+1}) t^2 + (d_k + d_{k+1} - 2 s_k) t^3\big].

    All zero is the identity. Identity outside :math:`[-B, B]`. The inverse finds :math:`t` by
    safeguarded Newton iteration (bisection where a Newton step leaves the bracket) until a step
    moves it by less than ``tolerance``; gradients of the inverse follow the implicit function
    theorem.

    Args:
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.
        tolerance: Stopping step of the inverse in bin-relative units; None takes ``1e-12`` in
            float64 and ``1e-6`` otherwise.

    References:
        Durkan, Bekasov, Murray & Papamakarios, Cubic-Spline Flows (2019); Steffen, A simple
        method for monotonic interpolation in one dimension (1990).

    Example:
        >>> import torch
        >>> spline = CubicSplineMap(bins=4)
        >>> spline(torch.tensor([0.5]), (torch.zeros(1, 10),))[0]
        tensor([0.5000])
    """

    def __init__(
        self, *, bins: int = 8, tail_bound: float = 3.0, tolerance: float | None = None
    ) -> None:
        super().__init__(bins=bins, tail_bound=tail_bound)
        self.tolerance = check_float(
            "CubicSplineMap", "tolerance", tolerance, 0.0, exclusive_minimum=True, optional=True
        )

    @staticmethod
    def _count(bins: int) -> int:
        return 2 * bins + 2

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Evaluate the map at ``x``; return ``y`` and the log-derivative."""
        return cubic_spline_forward(x, params[0], self.tail_bound)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the map at ``y`` by safeguarded Newton; return ``x`` and its log-derivative."""
        return cubic_spline_inverse(y, params[0], self.tail_bound, self.tolerance)


class CircularSplineMap(ElementwiseMap):
    r"""Circular rational-quadratic spline: a diffeomorphism of the circle :math:`[-\pi, \pi)`.

    :math:`y = \mathrm{wrap}\big(g(x) + \phi\big)`, where :math:`g` is the rational-quadratic
    spline of :class:`~flowkit.bijectors.RationalQuadraticSpline` on :math:`[-\pi, \pi]` with
    :math:`g(\pm\pi) = \pm\pi` and one learned derivative :math:`d_0 = d_K` at both ends, so
    :math:`g` joins itself smoothly around the circle; :math:`\phi` is a learned rotation and
    :math:`\mathrm{wrap}` maps onto :math:`[-\pi, \pi)` modulo :math:`2\pi`. Inputs outside
    :math:`[-\pi, \pi)` are wrapped first; outputs lie in it. :math:`\log g'` is that of the
    spline (the rotation preserves length).

    Each element has :math:`P = 3K + 1` raw parameters: ``K`` widths, ``K`` heights, ``K``
    derivatives (the first at :math:`\pm\pi`, then the ``K - 1`` inner ones) and :math:`\phi`.
    All zero is the identity. The inverse is
    :math:`x = g^{-1}(\mathrm{wrap}(y - \phi))`, the spline's closed-form quadratic. The map is a
    bijection of the circle, not of the real line: use it in a bijector over angles such as
    :class:`~flowkit.bijectors.CircularSplineCoupling` or
    :class:`~flowkit.bijectors.CircularSplineAutoregressive`, whose domain says so.

    Args:
        bins: Number of bins :math:`K`.

    References:
        Rezende, Papamakarios, Racanière, Albergo, Kanwar, Shanahan & Cranmer, Normalizing Flows
        on Tori and Spheres (2020).

    Example:
        >>> import torch
        >>> spline = CircularSplineMap(bins=4)
        >>> raw = torch.zeros(1, 13)
        >>> raw[:, -1] = 1.0  # rotate by one radian
        >>> spline(torch.tensor([3.0]), (raw,))[0]  # 4 radians, wrapped
        tensor([-2.2832])
    """

    def __init__(self, *, bins: int = 8) -> None:
        super().__init__()
        check_spline_options("CircularSplineMap", bins, math.pi)
        self.bins = bins
        self.params_per_element = 3 * bins + 1

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """Move each element's raw parameters from ``dim`` to the last axis."""
        return (theta.movedim(dim, -1),)

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        r"""Map the angles ``x``; return ``y`` in :math:`[-\pi, \pi)` and the log-derivative."""
        return circular_spline_forward(x, params[0])

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the map at the angles ``y``; return ``x`` and its log-derivative."""
        return circular_spline_inverse(y, params[0])

    def extra_repr(self) -> str:
        """Bins, for ``repr``."""
        return f"bins={self.bins}"


def spline_map(
    kind: str = "rational_quadratic", *, bins: int = 8, tail_bound: float = 3.0
) -> ElementwiseMap:
    """The spline map of ``kind`` (one of :data:`SPLINE_KINDS`) with ``bins`` bins on ``[-B, B]``.

    Example:
        >>> spline_map("cubic", bins=4).params_per_element
        10
    """
    check_choice("spline_map", "kind", kind, SPLINE_KINDS)
    classes = {
        "rational_quadratic": SplineMap,
        "linear": LinearSplineMap,
        "quadratic": QuadraticSplineMap,
        "cubic": CubicSplineMap,
    }
    spline: ElementwiseMap = classes[kind](bins=bins, tail_bound=tail_bound)
    return spline
