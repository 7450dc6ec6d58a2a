"""Elementwise maps with external parameters: affine, additive and rational-quadratic spline.

Couplings and autoregressive bijectors compose one of these with a conditioner network: the network
computes the parameters, the map applies them element by element. Each map is written once here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit.bijectors._rq_spline import (
    rq_spline_forward,
    rq_spline_inverse,
    spline_knots,
    spline_params_per_element,
)
from flowkit.bijectors.scale import ScaleFunction, resolve_scale_fn

__all__ = ["AdditiveMap", "AffineMap", "ElementwiseMap", "Params", "SplineMap"]

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
