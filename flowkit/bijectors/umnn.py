"""Unconstrained monotonic neural networks: a monotone map, the integral of a positive network."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_int
from flowkit.bijectors.maps import ElementwiseMap, Params
from flowkit.bijectors.neural import invert_increasing
from flowkit.bijectors.precision import as_dtype_of
from flowkit.nn import MLP

__all__ = ["MIN_INTEGRAND", "UMNNMap", "clenshaw_curtis"]

# The integrand is at least this, so the map grows at least this fast: it is then a bijection of
# the line (a positive integrand that decays could bound it) and the inverse has a closed bracket.
MIN_INTEGRAND = 1e-3
# softplus(0 + INTEGRAND_SHIFT) + MIN_INTEGRAND = 1: a zero output layer integrates to x.
INTEGRAND_SHIFT = math.log(math.expm1(1.0 - MIN_INTEGRAND))


def clenshaw_curtis(nodes: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    r"""Clenshaw–Curtis nodes and weights on :math:`[-1, 1]`.

    With :math:`n = \text{nodes} - 1`, the nodes are :math:`s_k = \cos(k\pi / n)`,
    :math:`k = 0..n` (both ends included) and the weights
    :math:`w_k = \frac{c_k}{n}\big(1 - \sum_{j=1}^{\lfloor n/2 \rfloor}
    \frac{\beta_j}{4j^2 - 1} \cos(2jk\pi / n)\big)`, :math:`c_0 = c_n = 1`, :math:`c_k = 2`
    otherwise, :math:`\beta_j = 1` for :math:`j = n/2` and 2 otherwise. The rule integrates
    polynomials of degree up to :math:`n` exactly (:math:`n + 1` for even :math:`n`); all weights
    are positive and sum to 2.

    Args:
        nodes: Number of nodes, at least 2.
        dtype: Floating dtype of the result (computed in float64).

    Returns:
        ``(nodes, weights)``, each of shape ``(nodes,)``; the first node is 1, the last -1.

    References:
        Clenshaw & Curtis, A method for numerical integration on an automatic computer (1960);
        Trefethen, Is Gauss quadrature better than Clenshaw–Curtis? (2008).

    Example:
        >>> s, w = clenshaw_curtis(5)
        >>> float((w * s**4).sum())  # the integral of s^4 over [-1, 1] is 2/5
        0.4
    """
    count = check_int("clenshaw_curtis", "nodes", nodes, 2)
    n = count - 1
    k = torch.arange(count, dtype=torch.float64)
    theta = k * math.pi / n
    inner = torch.ones(count, dtype=torch.float64)
    for j in range(1, n // 2 + 1):
        beta = 1.0 if 2 * j == n else 2.0
        inner = inner - beta / (4 * j * j - 1) * torch.cos(2 * j * theta)
    ends = torch.full((count,), 2.0, dtype=torch.float64)
    ends[0] = ends[-1] = 1.0
    weights = ends / n * inner
    return torch.cos(theta).to(dtype), weights.to(dtype)


class _ElementwiseIntegrand(nn.Module):
    """``elements`` independent MLPs with one output, run as one batched product per layer.

    The input ``(..., elements, nodes, in_features)`` holds each element's own rows; element
    ``e`` sees only network ``e``. Layers start as :class:`torch.nn.Linear`'s do, the output
    layer at zero.
    """

    def __init__(
        self,
        elements: int,
        in_features: int,
        hidden_features: Sequence[int],
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        widths = (in_features, *hidden_features, 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for inputs, outputs in zip(widths[:-1], widths[1:]):
            bound = 1 / math.sqrt(inputs)
            weight = torch.empty(elements, inputs, outputs).uniform_(-bound, bound)
            bias = torch.empty(elements, 1, outputs).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        with torch.no_grad():
            self.weights[-1].zero_()
            self.biases[-1].zero_()
        self.activation = activation()

    def forward(self, h: Tensor) -> Tensor:
        """Apply element ``e``'s network to ``h[..., e, :, :]``."""
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.matmul(h, weight) + bias
            if index < last:
                h = self.activation(h)
        return h


class UMNNMap(ElementwiseMap):
    r"""UMNN's map: :math:`y = \int_0^x g(t; h)\, dt + \beta`, with :math:`g > 0` a network.

    Each element's ``signal + 1`` raw parameters are an embedding :math:`h` (``signal`` values)
    and the offset :math:`\beta`. The integrand is a small network, one per element with
    ``elements`` (the features of a vector, as in the UMNN paper and zuko), otherwise one shared by
    all elements,

    .. math::

        g(t; h) = \mathrm{softplus}\big(\mathrm{MLP}([t, h])\big) + \epsilon,
        \qquad \epsilon = \texttt{MIN\_INTEGRAND} = 10^{-3},

    positive, so the integral increases; :math:`\epsilon` makes it a bijection of the line
    whatever the network learns. The integral is Clenshaw–Curtis quadrature with ``nodes`` nodes,
    :math:`\int_0^x g \approx \frac{x}{2} \sum_k w_k\, g\big(\tfrac{x}{2}(s_k + 1); h\big)`,
    exact for integrands polynomial in :math:`t` up to degree ``nodes - 1``; for the smooth
    integrands here (SiLU hidden layers and a softplus output, both analytic) the error falls
    geometrically with ``nodes``. Gradients go through the quadrature by plain autograd, which
    stores the network's activations at every node (memory grows with ``nodes``; the adjoint
    quadrature of the UMNN paper would not, and is not needed at tens of nodes). The
    log-derivative is :math:`\log g(x; h)`, the exact derivative of the integral (the
    quadrature's own derivative differs from it by the quadrature error). The computed map is
    therefore increasing up to that error, as in the UMNN paper: an integrand that varies on a
    scale much shorter than :math:`|x| / \text{nodes}` can break it, so raise ``nodes`` for
    sharply peaked integrands (``tests/bijectors/test_umnn.py`` checks monotonicity for any
    conditioner output with 17 and 33 nodes). The network's output
    layer starts at zero, where :math:`g = 1`, so with zero raw parameters the map is the
    identity.

    **Inverse.** The weights are positive and sum to 2, and :math:`g \ge \epsilon`, so the
    quadrature satisfies :math:`|y - \beta| \ge \epsilon |x|` with the sign of :math:`x`: the root
    of :math:`y = f(x)` lies between 0 and :math:`(y - \beta) / \epsilon`. Within that bound a
    doubling search from the origin (:meth:`bracket`) finds the bracket :math:`[R/2, R]` in
    which :math:`f` first passes :math:`y` (a bracket it is guaranteed to find, since the bound
    ends the search), so the root returned is the one nearest the origin should the quadrature
    ever make :math:`f` non-monotone. It is found there by Newton's method (slope :math:`g(x)`)
    safeguarded with bisection, until the step is below four units in the last place of
    :math:`x` (at most 100 quadratures). Gradients reach :math:`y` and the parameters through the
    implicit function theorem.

    Args:
        signal: Size of the embedding :math:`h` each element receives.
        hidden_features: Widths of the integrand network's hidden layers.
        nodes: Clenshaw–Curtis nodes (at least 2).
        activation: Module class for the integrand's hidden activations (smooth ones keep the
            quadrature accurate).
        elements: Give each index of the input's last axis its own integrand network (the
            input's last axis must then have this size), or None for one network shared by all
            elements. Separate networks fit better at equal parameter counts (``BENCHMARKS.md``);
            a shared one is the layout of earlier flowkit models.

    References:
        Wehenkel & Louppe, Unconstrained Monotonic Neural Networks (2019).

    Example:
        >>> umnn = UMNNMap(signal=4, hidden_features=(8,), nodes=17)
        >>> y, log_derivative = umnn(torch.tensor([-1.0, 0.5]), (torch.zeros(2, 5),))
        >>> y.detach()  # zero parameters and a zero output layer: the identity
        tensor([-1.0000,  0.5000])
    """

    fractions: Tensor
    weights: Tensor

    def __init__(
        self,
        signal: int = 8,
        hidden_features: Sequence[int] = (32, 32),
        *,
        nodes: int = 33,
        activation: type[nn.Module] = nn.SiLU,
        elements: int | None = None,
    ) -> None:
        super().__init__()
        self.signal = check_int("UMNNMap", "signal", signal, 1)
        self.nodes = check_int("UMNNMap", "nodes", nodes, 2)
        self.elements = check_int("UMNNMap", "elements", elements, 1, optional=True)
        self.params_per_element = self.signal + 1
        self.integrand: nn.Module
        if self.elements is None:
            self.integrand = MLP(1 + self.signal, 1, tuple(hidden_features), activation=activation)
        else:
            self.integrand = _ElementwiseIntegrand(
                self.elements, 1 + self.signal, tuple(hidden_features), activation
            )
        points, weights = clenshaw_curtis(self.nodes)
        # Fractions (s + 1) / 2 of x at which the integrand is evaluated; the first is x itself.
        self.register_buffer("fractions", (points + 1) / 2, persistent=False)
        self.register_buffer("weights", weights, persistent=False)

    def unpack(self, theta: Tensor, dim: int) -> Params:
        """Each element's embedding and offset on the last axis, as one tensor."""
        return (theta.movedim(dim, -1),)

    def _log_integrand(self, t: Tensor, h: Tensor) -> Tensor:
        r""":math:`\log g(t; h)` for ``t`` ``(..., K)`` and ``h`` ``(..., E)``."""
        h = h.unsqueeze(-2).expand(t.shape + h.shape[-1:])
        raw = as_dtype_of(self.integrand(torch.cat([t.unsqueeze(-1), h], dim=-1)), t).squeeze(-1)
        return torch.log(F.softplus(raw + INTEGRAND_SHIFT) + MIN_INTEGRAND)

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """The quadrature of the integral plus the offset; the log-derivative is ``log g(x)``."""
        if self.elements is not None and x.shape[-1:] != (self.elements,):
            raise ValueError(
                f"UMNNMap with one integrand per element expects {self.elements} elements on "
                f"the last axis, got shape {tuple(x.shape)}"
            )
        theta = params[0]
        h, offset = theta[..., : self.signal], theta[..., self.signal]
        fractions = self.fractions.to(x.dtype)
        weights = self.weights.to(x.dtype)
        log_g = self._log_integrand(x.unsqueeze(-1) * fractions, h)
        y = 0.5 * x * (log_g.exp() * weights).sum(-1) + offset
        return y, log_g[..., 0]

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor | None]:
        """Solve for ``x`` in the guaranteed bracket; return it and the inverse's log-derivative."""
        with torch.no_grad():
            low, high = self.bracket(y, params)
        return invert_increasing(self.forward, y, params, low, high)

    def bracket(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        r"""Bounds ``(low, high)`` of the root of :math:`f(x) = y`, by doubling from the origin.

        :math:`f(x) - \beta` has the sign of :math:`x`, so the root lies on the side of
        :math:`y - \beta`; the search doubles :math:`R = 1, 2, 4, \dots` until :math:`f(\pm R)`
        passes :math:`y`, which happens by :math:`R = |y - \beta| / \epsilon` at the latest
        (there :math:`|f - \beta| \ge \epsilon R`). The bracket is :math:`[R/2, R]` on that side
        (:math:`[0, R]` if the first try passes).
        """
        theta = params[0].detach()
        y = y.detach()
        residual = y - theta[..., self.signal]
        side = torch.where(residual < 0, -1.0, 1.0).to(y.dtype)
        # The bound above, widened against rounding; every search stops there.
        cap = residual.abs() / MIN_INTEGRAND * (1 + 1e-6) + torch.finfo(y.dtype).tiny
        radius = torch.minimum(torch.ones_like(y), cap)
        inner = torch.zeros_like(y)
        active = residual != 0
        while bool(active.any()):
            value, _ = self.forward(side * radius, (theta,))
            passed = (side * (value - y) >= 0) | (radius >= cap)
            grow = active & ~passed
            inner = torch.where(grow, radius, inner)
            radius = torch.where(grow, torch.minimum(2 * radius, cap), radius)
            active = grow
        radius = torch.where(residual == 0, torch.zeros_like(radius), radius)
        ends = side * inner, side * radius
        return torch.minimum(*ends), torch.maximum(*ends)

    def extra_repr(self) -> str:
        """Signal size and quadrature nodes, for ``repr``."""
        shared = "" if self.elements is None else f", elements={self.elements}"
        return f"signal={self.signal}, nodes={self.nodes}{shared}"
