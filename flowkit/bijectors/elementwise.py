"""Elementwise bijectors: each output entry depends on the matching input entry alone."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from flowkit._tensors import check_dtype, sum_rightmost
from flowkit.bijectors._domains import check_support
from flowkit.bijectors.base import Bijector

__all__ = [
    "Affine",
    "Elementwise",
    "Exp",
    "LeakyReLU",
    "LogisticToNormal",
    "Logit",
    "Sigmoid",
    "Softplus",
    "Tanh",
]

# log(2 pi) / 2, the standard normal log-density's constant.
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class Elementwise(Bijector):
    r"""Base class of elementwise monotone bijectors :math:`z_i = g(x_i)`.

    The Jacobian is diagonal, so :math:`\log|\det J| = \sum_i \log g'(x_i)`, summed over the last
    ``event_rank`` dimensions (none by default, as for ``torch.distributions`` transforms; a
    :class:`Compose` or a ``Flow`` sums whatever event dimensions remain).

    Subclasses implement ``_forward(x) -> (z, log_derivative)`` and
    ``_inverse(z) -> (x, log_derivative_of_inverse)`` elementwise.

    Args:
        event_rank: Number of rightmost dimensions summed into the log-determinant.
    """

    sign = 1

    def __init__(self, *, event_rank: int = 0) -> None:
        super().__init__()
        if event_rank < 0:
            raise ValueError(f"{type(self).__name__} expects event_rank >= 0, got {event_rank}")
        self.event_rank = int(event_rank)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the map elementwise; return ``z`` and the log-derivatives summed over the event."""
        check_dtype(type(self).__name__, x)
        check_support(type(self).__name__, x, self.domain)
        z, log_derivative = self._forward(x)
        return z, sum_rightmost(log_derivative, self.event_rank)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the inverse map elementwise; return ``x`` and its summed log-derivatives."""
        check_dtype(type(self).__name__, z, "latent")
        check_support(type(self).__name__, z, self.codomain, "latent")
        x, log_derivative = self._inverse(z)
        return x, sum_rightmost(log_derivative, self.event_rank)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        """The event rank when it is not zero, for ``repr``."""
        return f"event_rank={self.event_rank}" if self.event_rank else ""


class Affine(Elementwise):
    r"""Learnable elementwise affine map :math:`z = x \odot e^{s} + b`.

    The scale is stored as its logarithm :math:`s`, so it stays positive.

    Args:
        shape: Shape of ``s`` and ``b``; must broadcast against the event shape (e.g. ``(C, 1, 1)``
            for one scale per image channel). ``()`` shares one scalar.
        shift: Initial value of ``b``.
        scale: Initial value of :math:`e^{s}` (positive).
        learnable: Whether ``s`` and ``b`` are parameters (True) or fixed buffers.
        event_rank: Number of rightmost dimensions summed into the log-determinant.

    Example:
        >>> bijector = Affine(shape=(3,), scale=2.0, event_rank=1)
        >>> z, log_abs_det = bijector(torch.ones(4, 3))
        >>> bool(torch.allclose(log_abs_det, torch.full((4,), 3 * math.log(2.0))))
        True
    """

    def __init__(
        self,
        shape: Sequence[int] = (),
        *,
        shift: float = 0.0,
        scale: float = 1.0,
        learnable: bool = True,
        event_rank: int = 0,
    ) -> None:
        super().__init__(event_rank=event_rank)
        if not scale > 0:
            raise ValueError(f"Affine expects a positive scale, got {scale}")
        shift_value = torch.full(tuple(shape), float(shift))
        log_scale_value = torch.full(tuple(shape), math.log(scale))
        if learnable:
            self.shift = nn.Parameter(shift_value)
            self.log_scale = nn.Parameter(log_scale_value)
        else:
            self.register_buffer("shift", shift_value)
            self.register_buffer("log_scale", log_scale_value)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = x * self.log_scale.exp() + self.shift
        return z, self.log_scale.expand_as(z)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (z - self.shift) * torch.exp(-self.log_scale)
        return x, (-self.log_scale).expand_as(x)


class Exp(Elementwise):
    r""":math:`z = e^x`, from the real line to the positive reals; :math:`\log g'(x) = x`."""

    codomain = constraints.positive

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.exp(), x

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z.log()
        return x, -x


class Sigmoid(Elementwise):
    r""":math:`z = \sigma(x) = 1 / (1 + e^{-x})`, onto the unit interval.

    :math:`\log \sigma'(x) = -\mathrm{softplus}(-x) - \mathrm{softplus}(x)`, stable for large
    :math:`|x|`.
    """

    codomain = constraints.unit_interval

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), -F.softplus(-x) - F.softplus(x)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_z, log_one_minus_z = z.log(), torch.log1p(-z)
        return log_z - log_one_minus_z, -(log_z + log_one_minus_z)


class Logit(Elementwise):
    r"""Logit with optional squeezing into the interior of :math:`[0, 1]`.

    :math:`z = \mathrm{logit}(\alpha + (1 - 2\alpha) x)`.

    With :math:`\alpha > 0` this is RealNVP's preprocessing of images in :math:`[0, 1]`, which keeps
    the logit finite at the pixel range's ends. The map is then a bijection from the wider interval
    :math:`[-m, 1 + m]`, :math:`m = \alpha / (1 - 2\alpha)`, onto the real line, and that interval
    is its ``domain``: the inverse of any real :math:`z` lies in it, so samples of a model with this
    preprocessing may fall slightly outside :math:`[0, 1]` and must still be accepted by
    ``forward``.

    Args:
        alpha: Margin :math:`\alpha \in [0, 1/2)` kept from 0 and 1.
        event_rank: Number of rightmost dimensions summed into the log-determinant.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), section 4.1.
    """

    domain = constraints.unit_interval

    def __init__(self, alpha: float = 0.0, *, event_rank: int = 0) -> None:
        super().__init__(event_rank=event_rank)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"Logit expects 0 <= alpha < 0.5, got {alpha}")
        self.alpha = float(alpha)
        if self.alpha > 0:
            margin = self.alpha / (1.0 - 2.0 * self.alpha)
            self.domain = constraints.interval(-margin, 1.0 + margin)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_u, log_one_minus_u = u.log(), torch.log1p(-u)
        log_derivative = math.log1p(-2.0 * self.alpha) - log_u - log_one_minus_u
        return log_u - log_one_minus_u, log_derivative

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        log_derivative = -F.softplus(-z) - F.softplus(z) - math.log1p(-2.0 * self.alpha)
        return x, log_derivative

    def extra_repr(self) -> str:
        """The squeeze ``alpha`` and event rank, for ``repr``."""
        return ", ".join(filter(None, [f"alpha={self.alpha}", super().extra_repr()]))


class LogisticToNormal(Elementwise):
    r"""A standard logistic variable to a standard normal one: :math:`z = \Phi^{-1}(\sigma(x))`.

    :math:`\Phi` is the standard normal CDF. The log-derivative is
    :math:`\log\sigma(x) + \log\sigma(-x) - \log\varphi(z)`; the inverse is
    :math:`x = \log\Phi(z) - \log\Phi(-z)`, both computed in log space, and the forward map uses
    the symmetry :math:`\Phi^{-1}(\sigma(x)) = -\Phi^{-1}(\sigma(-x))` so that it keeps its
    digits for large :math:`x`. Flow++'s official dequantizer starts from Gaussian noise; placed
    first in a :class:`~flowkit.distributions.VariationalDequantizer`'s bijector (whose noise
    enters as a logistic variable) it gives that start exactly.

    Args:
        event_rank: Number of rightmost dimensions summed into the log-determinant.

    Example:
        >>> z, _ = LogisticToNormal()(torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64))
        >>> torch.special.ndtr(z)  # the logistic CDF at -2, 0 and 2
        tensor([0.1192, 0.5000, 0.8808], dtype=torch.float64)
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # Each side from the tail below 1/2; clamping keeps the unused side finite for autograd.
        above = -torch.special.ndtri(torch.sigmoid(-x.clamp(min=0)))
        below = torch.special.ndtri(torch.sigmoid(x.clamp(max=0)))
        z = torch.where(x >= 0, above, below)
        log_density = -0.5 * z.square() - _HALF_LOG_TWO_PI
        return z, F.logsigmoid(x) + F.logsigmoid(-x) - log_density

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.special.log_ndtr(z) - torch.special.log_ndtr(-z)
        log_density = -0.5 * z.square() - _HALF_LOG_TWO_PI
        return x, log_density - F.logsigmoid(x) - F.logsigmoid(-x)


class Tanh(Elementwise):
    r""":math:`z = \tanh(x)`, onto :math:`(-1, 1)`.

    :math:`\log \tanh'(x) = 2 (\log 2 - x - \mathrm{softplus}(-2x))`, stable for large :math:`|x|`.
    """

    codomain = constraints.interval(-1.0, 1.0)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(x), 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.atanh(z)
        return x, -torch.log1p(-z * z)


class Softplus(Elementwise):
    r""":math:`z = \log(1 + e^x)`, onto the positive reals; :math:`\log g'(x) = \log \sigma(x)`.

    The inverse :math:`x = z + \log(1 - e^{-z})` uses ``expm1`` for accuracy near zero.
    """

    codomain = constraints.positive

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.softplus(x), F.logsigmoid(x)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z + torch.log(-torch.expm1(-z))
        return x, -F.logsigmoid(x)


class LeakyReLU(Elementwise):
    r"""Leaky ReLU: :math:`z = x` for :math:`x \ge 0`, :math:`z = a x` otherwise (:math:`a > 0`).

    Args:
        negative_slope: The slope :math:`a` for negative inputs.
        event_rank: Number of rightmost dimensions summed into the log-determinant.
    """

    def __init__(self, negative_slope: float = 0.01, *, event_rank: int = 0) -> None:
        super().__init__(event_rank=event_rank)
        if not negative_slope > 0:
            raise ValueError(f"LeakyReLU expects negative_slope > 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        negative = x < 0
        z = torch.where(negative, x * self.negative_slope, x)
        return z, negative.to(x.dtype) * math.log(self.negative_slope)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        negative = z < 0
        x = torch.where(negative, z / self.negative_slope, z)
        return x, negative.to(z.dtype) * -math.log(self.negative_slope)

    def extra_repr(self) -> str:
        """The negative slope and event rank, for ``repr``."""
        return ", ".join(
            filter(None, [f"negative_slope={self.negative_slope}", super().extra_repr()])
        )
