"""Bijectors of angles: circular spline couplings and autoregressive circular splines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from flowkit._checks import accepts_context
from flowkit.bijectors.autoregressive import Autoregressive, _made_conditioner
from flowkit.bijectors.coupling import Coupling
from flowkit.bijectors.spline_maps import CircularSplineMap
from flowkit.bijectors.splits import Split
from flowkit.nn.made import Order

__all__ = ["ANGLES", "CircularSplineAutoregressive", "CircularSplineCoupling"]

ANGLES = constraints.half_open_interval(-math.pi, math.pi)
r"""The domain and codomain of the circular bijectors: angles in :math:`[-\pi, \pi)`."""


class _AngleFeatures(nn.Module):
    r"""Runs ``network`` on :math:`(\cos x, \sin x)`, so what it computes is periodic in ``x``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.pass_context = accepts_context(network)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        features = torch.cat([torch.cos(x), torch.sin(x)], dim=-1)
        if self.pass_context:
            return self.network(features, context)
        return self.network(features)


class CircularSplineCoupling(Coupling):
    r"""Circular spline coupling (NCSF): :math:`z_b = g(x_b; \theta(\cos x_a, \sin x_a, c))`.

    :math:`g` is the :class:`~flowkit.bijectors.CircularSplineMap`: a rational-quadratic spline of
    :math:`[-\pi, \pi]` with matching end derivatives, then a learned rotation modulo
    :math:`2\pi`. The conditioner sees the kept angles as :math:`(\cos x_a, \sin x_a)` (its input
    has ``2 * C_a`` features, cosines first), so the map, and the density of a flow built of these
    couplings, is continuous on the torus. The conditioner returns :math:`P = 3K + 1` raw
    parameters per transformed angle (interleaved as in every coupling; see
    :class:`~flowkit.bijectors.CircularSplineMap` for their order). A zero-initialised
    conditioner starts at the identity.

    Domain and codomain are :math:`[-\pi, \pi)` in every coordinate.
    :math:`\log|\det J| = \sum_b \log g'(x_b)`.

    Args:
        conditioner: Network mapping ``2 * C_a`` features (and context, if its forward takes one)
            to ``(3K + 1) * C_b`` outputs.
        mask: 1-D bool tensor, True for the kept angles, or a
            :class:`~flowkit.bijectors.Split` of vectors.
        bins: Number of bins :math:`K`.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Rezende, Papamakarios, Racanière, Albergo, Kanwar, Shanahan & Cranmer, Normalizing Flows
        on Tori and Spheres (2020).

    Example:
        >>> from flowkit.bijectors import channel_mask
        >>> from flowkit.nn import MLP
        >>> coupling = CircularSplineCoupling(MLP(4, 2 * 25), channel_mask(4, event_rank=1), bins=8)
        >>> z, log_abs_det = coupling(torch.rand(5, 4) * 6.28 - 3.14)
        >>> bool(((z >= -torch.pi) & (z < torch.pi)).all())
        True
    """

    transform: CircularSplineMap

    def __init__(self, conditioner: nn.Module, mask: Tensor | Split, *, bins: int = 8) -> None:
        if not isinstance(conditioner, nn.Module):
            raise TypeError(
                "CircularSplineCoupling expects an nn.Module conditioner, got "
                f"{type(conditioner).__name__}"
            )
        super().__init__(_AngleFeatures(conditioner), mask, CircularSplineMap(bins=bins))
        if self.event_rank != 1:
            raise ValueError(
                f"CircularSplineCoupling expects a 1-D mask over angles, got rank {self.event_rank}"
            )
        self.domain = ANGLES
        self.codomain = ANGLES


class CircularSplineAutoregressive(Autoregressive):
    r"""Autoregressive circular spline: :math:`z_i = g(x_i; \theta_i(x_{<i}, c))` on angles.

    :math:`g` is the :class:`~flowkit.bijectors.CircularSplineMap`, its :math:`3K + 1` raw
    parameters per angle from a zero-initialised :class:`~flowkit.nn.MADE`, so the step starts
    at the identity. The MADE reads the angles as they are: the map is continuous in
    :math:`x_i` around the circle, but may jump where an earlier angle crosses :math:`\pm\pi`
    (the density still integrates to 1 on the torus). For a density continuous in every
    coordinate use :class:`CircularSplineCoupling`. ``inverse`` takes ``D`` passes.

    Args:
        features: Number of angles ``D``.
        bins: Number of bins :math:`K`.
        context_features: Features of the context, or None.
        hidden_features: Widths of the MADE's hidden layers.
        residual: Use residual blocks in the MADE.
        order: Autoregressive order.
        activation: Module class for the MADE's hidden activations.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Rezende et al., Normalizing Flows on Tori and Spheres (2020); Germain et al., MADE (2015).

    Example:
        >>> step = CircularSplineAutoregressive(2, bins=4, hidden_features=(16,))
        >>> x = torch.tensor([[3.0, -3.0]])
        >>> bool(torch.allclose(step(x)[0], x))  # identity at initialisation
        True
    """

    transform: CircularSplineMap

    def __init__(
        self,
        features: int,
        *,
        bins: int = 8,
        context_features: int | None = None,
        hidden_features: Sequence[int] = (64, 64),
        residual: bool = False,
        order: Order = "natural",
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        transform = CircularSplineMap(bins=bins)
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
        self.domain = ANGLES
        self.codomain = ANGLES

    def extra_repr(self) -> str:
        """Features, context features and bins, for ``repr``."""
        return (
            f"features={self.features}, context_features={self.context_features}, "
            f"bins={self.transform.bins}"
        )
