"""Rational-quadratic spline bijectors: elementwise, coupling, autoregressive."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit.bijectors._rq_spline import (
    SplineKnots,
    rq_spline_forward,
    rq_spline_inverse,
    spline_knots,
)
from flowkit.bijectors.autoregressive import Autoregressive, _made_conditioner
from flowkit.bijectors.coupling import Coupling
from flowkit.bijectors.elementwise import Elementwise
from flowkit.bijectors.maps import ElementwiseMap, check_spline_options
from flowkit.bijectors.spline_maps import spline_map
from flowkit.bijectors.splits import Split
from flowkit.nn.made import Order

__all__ = ["RationalQuadraticSpline", "SplineAutoregressive", "SplineCoupling"]


class RationalQuadraticSpline(Elementwise):
    r"""Elementwise monotone rational-quadratic spline with learnable, unconditional parameters.

    On :math:`[-B, B]` the map is a monotone rational-quadratic spline with :math:`K` bins: knots
    :math:`(x_k, y_k)` with :math:`x_0 = y_0 = -B`, :math:`x_K = y_K = B`, and derivatives
    :math:`d_k > 0` at the knots (:math:`d_0 = d_K = 1`). In bin :math:`k`, with
    :math:`w_k = x_{k+1} - x_k`, :math:`h_k = y_{k+1} - y_k`, :math:`s_k = h_k / w_k` and
    :math:`\xi = (x - x_k) / w_k`,

    .. math::
        z = y_k + \frac{h_k [s_k \xi^2 + d_k \xi (1 - \xi)]}
                       {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)},
        \qquad
        \frac{dz}{dx} = \frac{s_k^2 [d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2]}
                             {[s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)]^2}.

    Outside :math:`[-B, B]` the map is the identity (linear tails), which the unit end derivatives
    join smoothly. The inverse solves a quadratic in :math:`\xi` in closed form.

    Widths and heights are softmaxes of raw parameters (each bin at least
    ``MIN_BIN_WIDTH`` of the interval), inner derivatives are
    softplus of raw parameters plus ``MIN_DERIVATIVE``. All raw
    parameters start at zero, which is the identity map.

    Args:
        shape: Shape of the parameter batch, one spline per entry; must broadcast against the
            input's trailing dimensions (``()`` shares one spline across all entries).
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`, the half-width of the interval the spline covers.
        event_rank: Number of rightmost dimensions summed into the log-determinant.

    Shapes:
        ``x``: any shape whose trailing dimensions ``shape`` broadcasts with; ``z`` the same;
        ``log_abs_det``: ``x``'s shape less ``event_rank`` dimensions.

    References:
        Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019).

    Example:
        >>> spline = RationalQuadraticSpline((3,), bins=4, event_rank=1)
        >>> z, log_abs_det = spline(torch.randn(8, 3))
        >>> log_abs_det.shape
        torch.Size([8])
    """

    def __init__(
        self,
        shape: Sequence[int] = (),
        *,
        bins: int = 8,
        tail_bound: float = 3.0,
        event_rank: int = 0,
    ) -> None:
        super().__init__(event_rank=event_rank)
        check_spline_options("RationalQuadraticSpline", bins, tail_bound)
        self.bins = bins
        self.tail_bound = float(tail_bound)
        shape = tuple(int(s) for s in shape)
        self.raw_widths = nn.Parameter(torch.zeros(shape + (bins,)))
        self.raw_heights = nn.Parameter(torch.zeros(shape + (bins,)))
        self.raw_derivatives = nn.Parameter(torch.zeros(shape + (bins - 1,)))

    def knots(self) -> SplineKnots:
        """The current knots ``(x, y, derivative)``, each of shape ``shape + (K + 1,)``."""
        return spline_knots(
            self.raw_widths, self.raw_heights, self.raw_derivatives, tail_bound=self.tail_bound
        )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return rq_spline_forward(x, self.knots(), self.tail_bound)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return rq_spline_inverse(z, self.knots(), self.tail_bound)

    def extra_repr(self) -> str:
        """Bins, tail bound and event rank, for ``repr``."""
        parts = [f"bins={self.bins}", f"tail_bound={self.tail_bound}", super().extra_repr()]
        return ", ".join(filter(None, parts))


class SplineCoupling(Coupling):
    r"""Rational-quadratic spline coupling (NSF): :math:`z_b = g(x_b; \theta(x_a, c))`.

    :math:`g` is the monotone rational-quadratic spline of :class:`RationalQuadraticSpline` on
    :math:`[-B, B]` (equations there), the identity outside.

    A :class:`~flowkit.bijectors.Coupling` with a :class:`~flowkit.bijectors.SplineMap`. The
    conditioner returns :math:`P = 3K - 1` raw parameters per transformed element, interleaved
    along the channel axis as in every coupling: channel ``j * P + p`` holds parameter ``p`` of
    element ``j``, and parameters ``0..K-1`` are the raw widths, ``K..2K-1`` the raw heights and
    ``2K..3K-2`` the raw inner derivatives. A zero-initialised conditioner (such as
    :class:`flowkit.nn.MLP`'s default) starts the coupling at the identity.

    :math:`\log|\det J| = \sum_b \log g'(x_b)`.

    ``spline`` picks another monotone spline of :math:`[-B, B]` (identity outside):
    ``"linear"`` (:class:`~flowkit.bijectors.LinearSplineMap`, :math:`P = K`), ``"quadratic"``
    (:class:`~flowkit.bijectors.QuadraticSplineMap`, :math:`P = 2K + 1`) or ``"cubic"``
    (:class:`~flowkit.bijectors.CubicSplineMap`, :math:`P = 2K + 2`); the conditioner then
    returns that map's ``P`` parameters per element.

    Args:
        conditioner: Network mapping ``x_a`` (and context, if its forward takes one) to
            ``(3K - 1) * C_b`` channels (channel split) or ``(3K - 1) * C`` (mask split).
        mask: Bool tensor, True for the kept part; its number of dimensions is the event rank. A
            :class:`~flowkit.bijectors.Split` is accepted too.
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.
        spline: ``"rational_quadratic"``, ``"linear"``, ``"quadratic"`` or ``"cubic"``.

    Shapes:
        ``x``: ``(*batch, C)`` with a 1-D mask or ``(*batch, C, H, W)`` with a 3-D one; ``z`` the
        same; ``log_abs_det``: ``(*batch,)``.

    References:
        Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019).

    Example:
        >>> from flowkit.bijectors import channel_mask
        >>> from flowkit.nn import MLP
        >>> coupling = SplineCoupling(MLP(2, 2 * 23), channel_mask(4, event_rank=1), bins=8)
        >>> z, log_abs_det = coupling(torch.randn(5, 4))
        >>> log_abs_det.shape
        torch.Size([5])
    """

    transform: ElementwiseMap

    def __init__(
        self,
        conditioner: nn.Module,
        mask: Tensor | Split,
        *,
        bins: int = 8,
        tail_bound: float = 3.0,
        spline: str = "rational_quadratic",
    ) -> None:
        check_spline_options("SplineCoupling", bins, tail_bound)
        super().__init__(conditioner, mask, spline_map(spline, bins=bins, tail_bound=tail_bound))


class SplineAutoregressive(Autoregressive):
    r"""Autoregressive rational-quadratic spline (Neural Spline Flows' RQ-NSF (AR)).

    :math:`z_i = g(x_i; \theta_i(x_{<i}, c))` with :math:`g` the spline below, its
    :math:`3K - 1` raw parameters per feature coming from a zero-initialised MADE (interleaved: the
    parameters of feature ``i`` are outputs ``i * P .. i * P + P - 1``, ordered widths, heights,
    inner derivatives). ``forward`` (density) is one pass; ``inverse`` inverts the spline in closed
    form feature by feature, ``D`` passes in all. :math:`g` is the monotone rational-quadratic
    spline of :class:`RationalQuadraticSpline` on :math:`[-B, B]` (equations there), the identity
    outside.

    :math:`\log|\det J| = \sum_i \log g'(x_i; \theta_i)`. ``spline`` picks another monotone
    spline, as in :class:`SplineCoupling`.

    Args:
        features: Number of features ``D``.
        bins: Number of bins :math:`K`.
        tail_bound: :math:`B`.
        spline: ``"rational_quadratic"``, ``"linear"``, ``"quadratic"`` or ``"cubic"``.
        context_features: Features of the context, or None.
        hidden_features: Widths of the MADE's hidden layers.
        residual: Use residual blocks in the MADE.
        order: Autoregressive order: ``"natural"``, ``"reversed"`` or the position of each feature.
        activation: Module class for the MADE's hidden activations.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019).

    Example:
        >>> spline = SplineAutoregressive(3, bins=4, hidden_features=(16, 16))
        >>> z, log_abs_det = spline(torch.randn(8, 3))
        >>> bool(torch.allclose(spline.inverse(z)[0], z))  # identity at initialisation
        True
    """

    transform: ElementwiseMap

    def __init__(
        self,
        features: int,
        *,
        bins: int = 8,
        tail_bound: float = 3.0,
        spline: str = "rational_quadratic",
        context_features: int | None = None,
        hidden_features: Sequence[int] = (64, 64),
        residual: bool = False,
        order: Order = "natural",
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        check_spline_options("SplineAutoregressive", bins, tail_bound)
        transform = spline_map(spline, bins=bins, tail_bound=tail_bound)
        made = _made_conditioner(
            features,
            transform.params_per_element,
            context_features=context_features,
            hidden_features=hidden_features,
            residual=residual,
            order=order,
            activation=activation,
            identity_init=True,
        )
        super().__init__(made, transform, (features,))
        self.features = int(features)
        self.context_features = context_features

    def extra_repr(self) -> str:
        """Features, context features, bins and tail bound, for ``repr``."""
        return (
            f"features={self.features}, context_features={self.context_features}, "
            f"{self.transform.extra_repr()}"
        )
