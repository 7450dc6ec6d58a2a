"""Elementwise maps with external parameters: affine, additive, spline and logistic-mixture CDF.

Couplings and autoregressive bijectors compose one of these with a conditioner network: the network
computes the parameters, the map applies them element by element. Each map is written once here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_float, check_int
from flowkit.bijectors._rq_spline import (
    rq_spline_forward,
    rq_spline_inverse,
    spline_knots,
    spline_params_per_element,
)
from flowkit.bijectors.scale import ScaleFunction, resolve_scale_fn

__all__ = [
    "MIN_MIXTURE_LOG_SCALE",
    "AdditiveMap",
    "AffineMap",
    "ElementwiseMap",
    "LogisticMixtureCDF",
    "Params",
    "SplineMap",
]

Params = tuple[Tensor, ...]
"""The parameters of a map, as its ``unpack`` makes them from the conditioner's output."""


class ElementwiseMap(nn.Module):
    r"""An invertible scalar map :math:`y = g(x; \theta)`, each element with its own parameters.

    Subclass contract (one class per map, nothing else to change):

    * ``params_per_element`` is the number :math:`P` of raw parameters of each element.
    * ``unpack(theta, dim)`` turns the conditioner's raw output into the parameters that ``forward``
      and ``inverse`` receive. ``theta`` is shaped like the transformed input with one extra axis
      ``dim`` of size :math:`P`; the default returns the :math:`P` slices along it (views, no copy).
    * ``forward(x, params) -> (y, log_derivative)`` and ``inverse(y, params) -> (x,
      log_derivative)`` return the elementwise :math:`\log|g'|` of the map they apply (so the
      inverse's is minus the forward one at the matching point), or None where it is zero.

    The raw output of a conditioner holds the :math:`P` parameters of each element next to each
    other: along the channel axis of a coupling network, parameter ``p`` of element ``j`` is
    channel ``j * P + p`` (Glow's interleaving), and along the last axis of a MADE likewise.
    A map may hold learnable parameters of its own (a module scale function, say); they are
    registered in the bijector that uses it.
    """

    params_per_element: int = 1

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """The parameters from ``theta``, whose axis ``dim`` holds each element's ``P`` values."""
        return tuple(theta.select(dim, index) for index in range(self.params_per_element))

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Map ``x`` given ``params``; return ``y`` and the log-derivative (None if zero)."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the map at ``y`` given ``params``; return ``x`` and its log-derivative."""
        raise NotImplementedError


class AffineMap(ElementwiseMap):
    r"""Affine map :math:`y = x \odot s + t` (or :math:`(x + t) \odot s` with ``shift_first``).

    The two parameters of each element are the shift :math:`t` and a raw scale :math:`h`, which
    ``scale_fn`` turns into :math:`\log s`: ``"sigmoid"`` (Glow's :math:`s = \sigma(h + 2)`),
    ``"exp"`` (:math:`s = e^h`, RealNVP), ``"softplus"`` (:math:`s = 1` at :math:`h = 0`, linear
    growth, at least ``MIN_SOFTPLUS_SCALE``), or any callable :math:`h \mapsto \log s` (a module
    such as :class:`flowkit.nn.ScaledTanh` brings its own parameters).
    :math:`\log|g'| = \log s`.

    Args:
        scale_fn: How the raw scale becomes a log-scale.
        shift_first: Shift before scaling (official Glow) instead of after (RealNVP, MAF).

    Example:
        >>> affine = AffineMap(scale_fn="exp")
        >>> raw_scale = torch.log(torch.tensor([2.0, 3.0]))
        >>> y, log_derivative = affine(torch.ones(2), (torch.zeros(2), raw_scale))
        >>> y
        tensor([2., 3.])
    """

    params_per_element = 2

    def __init__(self, scale_fn: ScaleFunction = "sigmoid", *, shift_first: bool = False) -> None:
        super().__init__()
        self.scale_fn_name, self.log_scale_fn = resolve_scale_fn(scale_fn, "AffineMap")
        self.shift_first = bool(shift_first)

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Scale and shift ``x``; return ``y`` and the log-scale as the log-derivative."""
        shift, raw_scale = params
        log_scale = self.log_scale_fn(raw_scale)
        scale = log_scale.exp()
        y = (x + shift) * scale if self.shift_first else x * scale + shift
        return y, log_scale

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Undo the scale and shift; return ``x`` and minus the log-scale."""
        shift, raw_scale = params
        log_scale = self.log_scale_fn(raw_scale)
        inverse_scale = torch.exp(-log_scale)
        x = y * inverse_scale - shift if self.shift_first else (y - shift) * inverse_scale
        return x, -log_scale

    def extra_repr(self) -> str:
        """Scale function and order of operations, for ``repr``."""
        return f"scale_fn={self.scale_fn_name!r}, shift_first={self.shift_first}"


class AdditiveMap(ElementwiseMap):
    r"""Additive map :math:`y = x + t`: volume-preserving, :math:`\log|g'| = 0` (reported as None).

    Example:
        >>> AdditiveMap()(torch.zeros(2), (torch.tensor([1.0, -1.0]),))
        (tensor([ 1., -1.]), None)
    """

    params_per_element = 1

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Add the shift; volume-preserving, so the log-derivative is None."""
        return x + params[0], None

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Subtract the shift; the log-derivative is None."""
        return y - params[0], None


def check_conditioner_and_map(owner: str, conditioner: object, transform: object) -> None:
    """Raise a TypeError unless ``conditioner`` is a module and ``transform`` an elementwise map."""
    if not isinstance(conditioner, nn.Module):
        raise TypeError(
            f"{owner} expects an nn.Module conditioner, got {type(conditioner).__name__}"
        )
    if not isinstance(transform, ElementwiseMap):
        raise TypeError(
            f"{owner} expects an ElementwiseMap transform, got {type(transform).__name__}"
        )


def check_spline_options(owner: str, bins: int, tail_bound: float) -> None:
    """Raise a ValueError naming ``owner`` unless ``bins`` is an int >= 2 and ``tail_bound > 0``."""
    # A single bin with unit end derivatives is the identity whatever its parameters.
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"{owner} expects an integer bins >= 2, got {bins!r}")
    if not tail_bound > 0:
        raise ValueError(f"{owner} expects tail_bound > 0, got {tail_bound}")


class SplineMap(ElementwiseMap):
    r"""Monotone rational-quadratic spline with :math:`K` bins on :math:`[-B, B]`, identity outside.

    The equations are those of :class:`~flowkit.bijectors.RationalQuadraticSpline`. Each element has
    :math:`P = 3K - 1` raw parameters: ``K`` widths, ``K`` heights and ``K - 1`` inner derivatives,
    in that order; all zero is the identity. The inverse solves a quadratic in closed form.

    Args:
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.

    References:
        Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019).

    Example:
        >>> spline = SplineMap(bins=4)
        >>> y, _ = spline(torch.tensor([0.5]), (torch.zeros(1, 11),))
        >>> y  # zero parameters: the identity
        tensor([0.5000])
    """

    def __init__(self, *, bins: int = 8, tail_bound: float = 3.0) -> None:
        super().__init__()
        check_spline_options("SplineMap", bins, tail_bound)
        self.bins = bins
        self.tail_bound = float(tail_bound)
        self.params_per_element = spline_params_per_element(bins)

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """Move the spline parameters of each element from ``dim`` to the last axis."""
        # Each element's parameters on the last axis, as the spline's knots are built along it.
        return (theta.movedim(dim, -1),)

    def _knots(self, theta: Tensor):
        bins = self.bins
        return spline_knots(
            theta[..., :bins],
            theta[..., bins : 2 * bins],
            theta[..., 2 * bins :],
            tail_bound=self.tail_bound,
        )

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Evaluate the spline at ``x``; return ``y`` and the log-derivative."""
        return rq_spline_forward(x, self._knots(params[0]), self.tail_bound)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Invert the spline at ``y``; return ``x`` and the log-derivative of the inverse."""
        return rq_spline_inverse(y, self._knots(params[0]), self.tail_bound)

    def extra_repr(self) -> str:
        """Bins and tail bound, for ``repr``."""
        return f"bins={self.bins}, tail_bound={self.tail_bound}"


# Flow++ clamps the mixture's log-scales from below: a narrower component makes the CDF a near
# step, whose derivative overflows and whose inverse cannot be resolved in float32.
MIN_MIXTURE_LOG_SCALE = -7.0


class LogisticMixtureCDF(ElementwiseMap):
    r"""Flow++'s map: a logistic mixture's CDF, then the logit, then an affine map.

    .. math::

        y = \sigma^{-1}\big(F(x)\big)\, e^{\tanh(a)} + b, \qquad
        F(x) = \sum_{k=1}^{K} \pi_k\, \sigma\Big(\frac{x - \mu_k}{s_k}\Big),

    with :math:`\sigma` the logistic sigmoid, :math:`\pi = \mathrm{softmax}(\ell)` and
    :math:`\log s_k` clamped below at ``MIN_MIXTURE_LOG_SCALE`` (-7, as Flow++). The
    log-derivative is :math:`\log f(x) - \log F(x) - \log(1 - F(x)) + \tanh(a)`, where
    :math:`f = F'`; every term is a ``logsumexp`` of log-sigmoids, so it stays finite far in the
    tails where :math:`F` rounds to 0 or 1.

    Each element has :math:`P = 3K + 2` raw parameters, in this order: the ``K`` logits
    :math:`\ell`, the ``K`` means :math:`\mu`, the ``K`` log-scales :math:`\log s`, then
    :math:`a` and :math:`b`. All zero is exactly the identity (one standard logistic, whose logit
    CDF is :math:`x`). As in Flow++'s official code the affine log-scale is :math:`\tanh(a)`, so the
    affine part scales by :math:`e^{-1}` to :math:`e` whatever the network outputs;
    ``tanh_scale=False`` applies :math:`a` itself (unbounded).

    The inverse undoes the affine map, :math:`w = (y - b) e^{-\tanh(a)}`, and solves
    :math:`\sigma^{-1}(F(x)) = w` by bisection. Component :math:`k` alone reaches
    :math:`\sigma(w)` at :math:`\mu_k + s_k w`, so the root lies between the smallest and the
    largest of these points; the bracket is halved until it is narrower than ``tolerance`` (at
    most ``max_iterations`` times, a count set once per call from the widest bracket), so the
    returned :math:`x` is within ``tolerance`` of the root, plus what rounding :math:`y` in the
    dtype moves it by (a few units in the last place of :math:`y` over :math:`g'(x)`, which
    dominates on flat stretches of the map and, in float32, mostly). The inverse's
    log-derivative is minus the forward one at the returned :math:`x`. Gradients flow through
    the inverse by the implicit function theorem,
    :math:`\partial x / \partial \theta = -(\partial y / \partial \theta) / g'(x)`.

    Args:
        components: Number of mixture components :math:`K`.
        tolerance: Absolute error of the inverse in :math:`x`; None takes ``1e-12`` in float64
            and ``1e-6`` in other dtypes.
        max_iterations: Most bisection steps of one inverse.
        tanh_scale: Bound the affine log-scale by :math:`\tanh` (Flow++'s official code).

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++: Improving Flow-Based Generative Models with
        Variational Dequantization and Architecture Design (2019).

    Example:
        >>> mixture = LogisticMixtureCDF(components=2)
        >>> x = torch.tensor([-1.0, 0.5])
        >>> y, log_derivative = mixture(x, mixture.unpack(torch.zeros(2, 8), -1))
        >>> y  # zero parameters: the identity
        tensor([-1.0000,  0.5000])
    """

    def __init__(
        self,
        components: int = 4,
        *,
        tolerance: float | None = None,
        max_iterations: int = 100,
        tanh_scale: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(tanh_scale, bool):
            raise TypeError(f"LogisticMixtureCDF expects tanh_scale as a bool, got {tanh_scale!r}")
        self.tanh_scale = tanh_scale
        self.components = check_int("LogisticMixtureCDF", "components", components, 1)
        self.tolerance = check_float(
            "LogisticMixtureCDF", "tolerance", tolerance, 0.0, exclusive_minimum=True, optional=True
        )
        self.max_iterations = check_int("LogisticMixtureCDF", "max_iterations", max_iterations, 1)
        self.params_per_element = 3 * self.components + 2

    def unpack(self, theta: Tensor, dim: int) -> Params:
        r"""Logits, means and log-scales (each with ``K`` on the last axis), then ``a`` and ``b``.

        ``a`` is returned as the applied log-scale: :math:`\tanh` of the raw output when
        ``tanh_scale``.
        """
        theta = theta.movedim(dim, -1)
        k = self.components
        log_scale = theta[..., 3 * k]
        return (
            theta[..., :k],
            theta[..., k : 2 * k],
            theta[..., 2 * k : 3 * k],
            torch.tanh(log_scale) if self.tanh_scale else log_scale,
            theta[..., 3 * k + 1],
        )

    @staticmethod
    def _mixture(params: Params) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log-weights, means, clamped log-scales and inverse scales, each ``(..., K)``."""
        logits, means, log_scales = params[:3]
        log_scales = log_scales.clamp(min=MIN_MIXTURE_LOG_SCALE)
        return torch.log_softmax(logits, dim=-1), means, log_scales, torch.exp(-log_scales)

    @staticmethod
    def _log_tails(x: Tensor, mixture: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        r""":math:`\log F`, :math:`\log(1 - F)` and the per-component log-sigmoids at ``x``."""
        log_weights, means, _, inverse_scales = mixture
        t = (x.unsqueeze(-1) - means) * inverse_scales
        log_below = log_weights + F.logsigmoid(t)
        log_above = log_weights + F.logsigmoid(-t)
        log_cdf = torch.logsumexp(log_below, dim=-1)
        log_survival = torch.logsumexp(log_above, dim=-1)
        return log_cdf, log_survival, log_below + log_above - log_weights

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Apply the map to ``x``; return ``y`` and the log-derivative."""
        a, b = params[3], params[4]
        mixture = self._mixture(params)
        log_cdf, log_survival, log_densities = self._log_tails(x, mixture)
        # Component k's density is sigma(t) sigma(-t) / s_k; weighted, its log is log_densities.
        log_pdf = torch.logsumexp(log_densities - mixture[2], dim=-1)
        y = (log_cdf - log_survival) * torch.exp(a) + b
        return y, log_pdf - log_cdf - log_survival + a

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Solve for ``x`` by bisection; return it and the inverse's log-derivative."""
        a, b = params[3], params[4]
        with torch.no_grad():
            x = self._bisect(((y - b) * torch.exp(-a)).detach(), tuple(p.detach() for p in params))
        if torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in params)):
            # One Newton step whose value is dropped: x keeps its value and gains the implicit
            # gradient -(dy/dtheta) / g'(x). A non-finite step (g' underflowing far in a gap
            # between components) contributes no gradient rather than NaN.
            y_at_x, log_derivative = self.forward(x, params)
            assert log_derivative is not None
            step = (y - y_at_x) * torch.exp(-log_derivative.detach())
            step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
            x = x + (step - step.detach())
        _, log_derivative = self.forward(x, params)
        assert log_derivative is not None
        return x, -log_derivative

    def _bisect(self, w: Tensor, params: Params) -> Tensor:
        r"""The ``x`` with :math:`\sigma^{-1}(F(x)) = w`, by bisection (no autograd)."""
        mixture = self._mixture(params)
        ends = mixture[1] + torch.exp(mixture[2]) * w.unsqueeze(-1)
        low, high = torch.broadcast_tensors(ends.amin(dim=-1), ends.amax(dim=-1))
        if not low.numel():
            return low
        tolerance = self.tolerance
        if tolerance is None:
            tolerance = 1e-12 if low.dtype == torch.float64 else 1e-6
        width = float((high - low).max())
        # The bracket halves each step; equal ends (one component, or all alike) need no step.
        if not math.isfinite(width):
            iterations = self.max_iterations
        elif width <= tolerance:
            iterations = 0
        else:
            iterations = min(self.max_iterations, math.ceil(math.log2(width / tolerance)))
        for _ in range(iterations):
            middle = 0.5 * (low + high)
            log_cdf, log_survival, _ = self._log_tails(middle, mixture)
            below = log_cdf - log_survival < w
            low = torch.where(below, middle, low)
            high = torch.where(below, high, middle)
        return 0.5 * (low + high)

    def extra_repr(self) -> str:
        """Components, tolerance and iteration cap, for ``repr``."""
        return (
            f"components={self.components}, tolerance={self.tolerance}, "
            f"max_iterations={self.max_iterations}, tanh_scale={self.tanh_scale}"
        )
