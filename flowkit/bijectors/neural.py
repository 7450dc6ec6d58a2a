r"""Neural autoregressive flows' monotone maps: deep sigmoidal and deep dense sigmoidal flows."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit._checks import check_int
from flowkit.bijectors._monotone import solve_increasing
from flowkit.bijectors.maps import ElementwiseMap, Params

__all__ = ["MIN_SIGMOID_SLOPE", "DeepDenseSigmoidMap", "DeepSigmoidMap"]

# The slope a_k of each sigmoid is at least this: the inverse's bracket (below) widens as 1 / a_k,
# and a flatter sigmoid adds nothing a smaller weight would not.
MIN_SIGMOID_SLOPE = 1e-3
# softplus(raw + SLOPE_SHIFT) + MIN_SIGMOID_SLOPE is exactly 1 at raw = 0, so that all-zero raw
# parameters give a = 1, b = 0 and uniform weights: the identity.
SLOPE_SHIFT = math.log(math.expm1(1.0 - MIN_SIGMOID_SLOPE))
# The bracket's ends are widened by this fraction of (1 + |end|), so that rounding in computing
# them cannot leave the root just outside.
BRACKET_MARGIN = 1e-6

Forward = Callable[[Tensor, Params], tuple[Tensor, Tensor | None]]


def invert_increasing(
    forward: Forward, y: Tensor, params: Params, low: Tensor, high: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Solve ``forward(x, params)[0] = y`` in ``[low, high]``; return ``x``, minus its log-slope.

    The root is found without autograd by :func:`~flowkit.bijectors._monotone.solve_increasing`
    (Newton safeguarded by bisection: every step keeps the root bracketed, and an element stops
    once its step is below four units in the last place of ``x``). Gradients then reach ``y`` and
    the parameters by the implicit function theorem,
    :math:`\partial x / \partial \theta = -(\partial y / \partial \theta) / g'(x)`, through one
    Newton step whose value is dropped.
    """
    detached = tuple(p.detach() for p in params)

    def value_and_slope(a: Tensor) -> tuple[Tensor, Tensor]:
        value, log_slope = forward(a, detached)
        assert log_slope is not None
        return value, log_slope.exp()

    width = (high - low).abs()
    low = low - BRACKET_MARGIN * (1 + low.abs() + width)
    high = high + BRACKET_MARGIN * (1 + high.abs() + width)
    x = solve_increasing(value_and_slope, y.detach(), low.detach(), high.detach())
    if torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in params)):
        y_at_x, log_slope = forward(x, params)
        assert log_slope is not None
        step = (y - y_at_x) * torch.exp(-log_slope.detach())
        # A slope that underflows gives no gradient rather than NaN.
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        x = x + (step - step.detach())
    _, log_slope = forward(x, params)
    assert log_slope is not None
    return x, -log_slope


def _slope(raw: Tensor) -> tuple[Tensor, Tensor]:
    """The sigmoids' slopes ``a`` (at least ``MIN_SIGMOID_SLOPE``, 1 at raw 0) and ``log a``."""
    slope = F.softplus(raw + SLOPE_SHIFT) + MIN_SIGMOID_SLOPE
    return slope, slope.log()


def _sigmoid_layer(
    h: Tensor, log_dh: Tensor, raw_slope: Tensor, shift: Tensor, log_u: Tensor, log_w: Tensor
) -> tuple[Tensor, Tensor]:
    r"""One (dense) sigmoidal layer and the log of its outputs' derivatives with respect to ``x``.

    ``h`` ``(..., m)`` is the layer's input and ``log_dh`` the log of :math:`dh/dx` (positive);
    ``raw_slope`` and ``shift`` ``(..., H)``; ``log_u`` ``(..., H, m)`` and ``log_w``
    ``(..., n, H)`` log-softmax rows. Every sum of positive terms is a ``logsumexp``.
    """
    slope, log_slope = _slope(raw_slope)
    mix = (log_u.exp() * h.unsqueeze(-2)).sum(-1)
    pre = slope * mix + shift
    log_up, log_down = F.logsigmoid(pre), F.logsigmoid(-pre)
    log_cdf = torch.logsumexp(log_w + log_up.unsqueeze(-2), dim=-1)
    log_survival = torch.logsumexp(log_w + log_down.unsqueeze(-2), dim=-1)
    log_dpre = log_slope + torch.logsumexp(log_u + log_dh.unsqueeze(-2), dim=-1)
    log_terms = log_w + (log_up + log_down + log_dpre).unsqueeze(-2)
    log_dout = torch.logsumexp(log_terms, dim=-1) - log_cdf - log_survival
    return log_cdf - log_survival, log_dout


class _SigmoidalMap(ElementwiseMap):
    r"""Shared machinery of the deep sigmoidal maps: the layers, the bracket and the inverse.

    Each layer maps its inputs :math:`h` (``m`` of them) to ``n`` outputs by
    :math:`h'_j = \sigma^{-1}\big(\sum_k w_{jk}\,\sigma(a_k \sum_i u_{ki} h_i + b_k)\big)`
    with ``H`` sigmoids. Subclasses say which ``(m, n)`` each layer has and where its raw
    parameters sit.
    """

    def __init__(self, owner: str, hidden: int, layers: int) -> None:
        super().__init__()
        self.hidden = check_int(owner, "hidden", hidden, 1)
        self.layers = check_int(owner, "layers", layers, 1)

    def _shapes(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _sizes(self) -> list[int]:
        sizes = []
        for m, n in self._shapes():
            sizes += [self.hidden, self.hidden, self.hidden * m if m > 1 else 0, n * self.hidden]
        return sizes

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """Each element's raw parameters on the last axis, as one tensor."""
        return (theta.movedim(dim, -1),)

    def _layers(self, theta: Tensor):
        """Per layer: raw slopes, shifts, ``log u`` and ``log w``."""
        pieces = theta.split(self._sizes(), dim=-1)
        batch = theta.shape[:-1]
        for index, (m, n) in enumerate(self._shapes()):
            raw_slope, shift, raw_u, raw_w = pieces[4 * index : 4 * index + 4]
            if m > 1:
                log_u = torch.log_softmax(raw_u.unflatten(-1, (self.hidden, m)), dim=-1)
            else:
                log_u = theta.new_zeros(batch + (self.hidden, 1))
            log_w = torch.log_softmax(raw_w.unflatten(-1, (n, self.hidden)), dim=-1)
            yield raw_slope, shift, log_u, log_w

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Apply the layers to ``x``; return ``y`` and the exact log-derivative."""
        h = x.unsqueeze(-1)
        log_dh = torch.zeros_like(h)
        for layer in self._layers(params[0]):
            h, log_dh = _sigmoid_layer(h, log_dh, *layer)
        return h.squeeze(-1), log_dh.squeeze(-1)

    def bracket(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        r"""Bounds ``(low, high)`` of the ``x`` that maps to ``y`` (see :class:`DeepSigmoidMap`)."""
        low, high = y, y
        for raw_slope, shift, _, _ in reversed(list(self._layers(params[0]))):
            slope, _ = _slope(raw_slope)
            low = ((low.unsqueeze(-1) - shift) / slope).amin(-1)
            high = ((high.unsqueeze(-1) - shift) / slope).amax(-1)
        return low, high

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Solve for ``x`` in the guaranteed bracket; return it and the inverse's log-derivative."""
        with torch.no_grad():
            low, high = self.bracket(y, params)
        return invert_increasing(self.forward, y, params, low, high)

    def extra_repr(self) -> str:
        """Sigmoids per layer and layers, for ``repr``."""
        return f"hidden={self.hidden}, layers={self.layers}"


class DeepSigmoidMap(_SigmoidalMap):
    r"""Deep sigmoidal flow (DSF): ``layers`` sigmoidal layers of ``hidden`` sigmoids each.

    One layer is

    .. math::

        h' = \sigma^{-1}\Big(\sum_{k=1}^{H} w_k\, \sigma(a_k h + b_k)\Big),
        \qquad a_k > 0,\ w = \mathrm{softmax}(\cdot),

    and the map composes ``layers`` of them, :math:`h_0 = x`, :math:`y = h_L`. Each layer is
    increasing with limits :math:`\pm\infty`, so the map is a bijection of the line. Everything
    is computed in log space, as the paper's code does: :math:`\log \sum_k w_k \sigma(p_k)` and
    :math:`\log(1 - \sum_k w_k \sigma(p_k))` are ``logsumexp``\ s of log-sigmoids, so :math:`y`
    is their difference and never rounds to :math:`\pm\infty` where the sum rounds to 0 or 1; the
    log-derivative,
    :math:`\log \sum_k w_k a_k \sigma(p_k) \sigma(-p_k) - \log S - \log(1 - S)` per layer, summed
    over layers, is exact.

    Each element has :math:`P = 3HL` raw parameters: per layer, ``H`` raw slopes (:math:`a =`
    softplus, at least ``MIN_SIGMOID_SLOPE``, 1 at 0), ``H`` shifts :math:`b` and ``H`` weight
    logits. All zero is exactly the identity.

    **Inverse.** Each output of a layer is the logit of a convex combination of
    :math:`\sigma(p_k)`, :math:`p_k = a_k \bar h_k + b_k`, so it lies between
    :math:`\min_k p_k` and :math:`\max_k p_k`, and :math:`\bar h_k = \sum_i u_{ki} h_i` lies
    between the smallest and the largest input. By induction over the layers,
    :math:`\Phi(x) \le g(x) \le \Psi(x)` with :math:`\Phi = \phi_L \circ \dots \circ \phi_1`,
    :math:`\phi_l(t) = \min_k (a_k t + b_k)` and :math:`\Psi` the same with :math:`\max`. Both are
    increasing bijections of the line with closed-form inverses
    (:math:`\phi_l^{-1}(t) = \max_k (t - b_k) / a_k`), so the root of :math:`g(x) = y` lies in
    the guaranteed bracket :math:`[\Psi^{-1}(y), \Phi^{-1}(y)]` (widened by ``1e-6`` of its
    size against rounding). It is found there by Newton's method safeguarded with bisection
    (each step keeps the root bracketed) until the step is below four units in the last place of
    :math:`x`, at most 100 evaluations: so to working precision, plus what rounding :math:`y`
    moves the root by (a few ulps of :math:`y` over :math:`g'(x)`). Gradients reach :math:`y`
    and the parameters through the implicit function theorem.

    Args:
        hidden: Sigmoids per layer :math:`H`.
        layers: Number of layers :math:`L`.

    References:
        Huang, Krueger, Lacoste & Courville, Neural Autoregressive Flows (2018).

    Example:
        >>> dsf = DeepSigmoidMap(hidden=4, layers=2)
        >>> y, log_derivative = dsf(torch.tensor([-1.0, 0.5]), (torch.zeros(2, 24),))
        >>> y  # zero parameters: the identity
        tensor([-1.0000,  0.5000])
    """

    def __init__(self, hidden: int = 8, layers: int = 1) -> None:
        super().__init__("DeepSigmoidMap", hidden, layers)
        self.params_per_element = sum(self._sizes())

    def _shapes(self) -> list[tuple[int, int]]:
        return [(1, 1)] * self.layers


class DeepDenseSigmoidMap(_SigmoidalMap):
    r"""Deep dense sigmoidal flow (DDSF): sigmoidal layers of width ``hidden``, densely connected.

    Layer :math:`l` maps its inputs :math:`h \in \mathbb{R}^{m}` to :math:`h' \in \mathbb{R}^{n}`:

    .. math::

        h'_j = \sigma^{-1}\Big(\sum_{k=1}^{H} w_{jk}\, \sigma\big(a_k \textstyle\sum_i u_{ki} h_i
        + b_k\big)\Big),

    with :math:`a_k > 0` and the rows of :math:`u` and :math:`w` softmaxes, so every output
    increases with every input. The first layer takes :math:`x` (:math:`m = 1`), the last
    returns :math:`y` (:math:`n = 1`), the others are :math:`H` wide. The derivative is the
    product of the layers' positive Jacobians; it is accumulated as logs, each matrix product a
    ``logsumexp`` (as the paper's code does), so the log-derivative is exact and finite far in
    the tails.

    Each element's raw parameters are, per layer, ``H`` raw slopes, ``H`` shifts, ``H * m``
    logits of :math:`u` (none when :math:`m = 1`) and ``n * H`` logits of :math:`w`. All zero is
    exactly the identity.

    The inverse is :class:`DeepSigmoidMap`'s: the same guaranteed bracket (its argument holds
    for dense layers, since a convex combination of the inputs lies between the smallest and the
    largest), then safeguarded Newton to working precision.

    Args:
        hidden: Width :math:`H` of each layer.
        layers: Number of layers :math:`L`.

    References:
        Huang, Krueger, Lacoste & Courville, Neural Autoregressive Flows (2018).

    Example:
        >>> ddsf = DeepDenseSigmoidMap(hidden=4, layers=2)
        >>> ddsf.params_per_element
        52
        >>> y, _ = ddsf(torch.tensor([-1.0, 0.5]), (torch.zeros(2, 52),))
        >>> y  # zero parameters: the identity
        tensor([-1.0000,  0.5000])
    """

    def __init__(self, hidden: int = 8, layers: int = 2) -> None:
        super().__init__("DeepDenseSigmoidMap", hidden, layers)
        self.params_per_element = sum(self._sizes())

    def _shapes(self) -> list[tuple[int, int]]:
        widths = [1] + [self.hidden] * (self.layers - 1) + [1]
        return list(zip(widths[:-1], widths[1:]))
