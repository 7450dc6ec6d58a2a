"""Base distributions on the circle and the torus: uniform and von Mises angles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from flowkit._tensors import sum_rightmost
from flowkit.distributions._inputs import check_temperature
from flowkit.distributions.base import Distribution, SampleShape, sample_shape_of

__all__ = ["CircularUniform", "VonMises"]

LOG_TWO_PI = math.log(2.0 * math.pi)


def _angles(event_shape: Sequence[int]) -> constraints.Constraint:
    interval = constraints.half_open_interval(-math.pi, math.pi)
    return constraints.independent(interval, len(tuple(event_shape)))


class CircularUniform(Distribution):
    r"""Uniform distribution on the torus :math:`[-\pi, \pi)^D` (the circle for one angle).

    :math:`\log p(z) = -D \log 2\pi` for :math:`z` in :math:`[-\pi, \pi)^D` and :math:`-\infty`
    outside it. Samples only at temperature 1 (a uniform angle has no scale to shrink).

    Args:
        event_shape: Shape of one event (``(D,)`` for ``D`` angles).

    Shapes:
        ``log_prob``: ``(*batch, *event_shape)`` gives ``(*batch,)``; ``sample(n)``:
        ``(*n, *event_shape)``.

    Example:
        >>> base = CircularUniform((2,))
        >>> base.log_prob(torch.tensor([[0.0, 3.0], [0.0, 4.0]]))
        tensor([-3.6758,    -inf])
    """

    _reference: Tensor

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        # Carries dtype and device, so .to() and .double() move the samples too.
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    @property
    def support(self) -> constraints.Constraint:
        r""":math:`[-\pi, \pi)` in every coordinate, over whole events."""
        return _angles(self.event_shape)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        r""":math:`-D \log 2\pi` on the torus, ``-inf`` outside; ``context`` is unused."""
        self._check_event(z)
        rank = len(self.event_shape)
        inside = (z >= -math.pi) & (z < math.pi)
        inside = inside.flatten(z.dim() - rank).all(-1) if rank else inside
        log_density = torch.full_like(inside, -LOG_TWO_PI * self.event_shape.numel(), dtype=z.dtype)
        return torch.where(inside, log_density, torch.full_like(log_density, -math.inf))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        r"""Draw ``n`` uniform angles in :math:`[-\pi, \pi)`; only at temperature 1."""
        if check_temperature("CircularUniform.sample", temperature) != 1.0:
            raise ValueError(f"CircularUniform samples only at temperature 1, got {temperature}")
        shape = sample_shape_of(n, "CircularUniform.sample") + self.event_shape
        u = torch.rand(shape, dtype=self._reference.dtype, device=self._reference.device)
        return (2.0 * u - 1.0) * math.pi

    def extra_repr(self) -> str:
        """Describe the event shape in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}"


class VonMises(Distribution):
    r"""Independent von Mises angles on :math:`[-\pi, \pi)^D`, the circle's normal distribution.

    .. math::
        \log p(z) = \sum_i \kappa_i \cos(z_i - \mu_i) - \log 2\pi - \log I_0(\kappa_i),

    normalised on the circle, with :math:`\log I_0(\kappa) = \log(I_0(\kappa) e^{-\kappa}) +
    \kappa` from ``torch.special.i0e`` (no overflow for large :math:`\kappa`). The density is
    periodic; samples are wrapped into :math:`[-\pi, \pi)`. ``sample(..., temperature=T)``
    draws at concentration :math:`\kappa / T^2` (for large :math:`\kappa` the angle is nearly
    normal with variance :math:`1 / \kappa`, so this scales its spread by :math:`T`). Sampling
    uses ``torch.distributions.VonMises`` (rejection, not reparameterised).

    Args:
        event_shape: Shape of one event.
        loc: Mean direction :math:`\mu`: a number or a tensor broadcasting to ``event_shape``.
        concentration: :math:`\kappa > 0`, likewise.
        learnable: Learn :math:`\mu` and :math:`\log \kappa` as parameters.

    Example:
        >>> base = VonMises((1,), concentration=2.0)
        >>> base.log_prob(torch.zeros(1, 1))  # 2 - log(2 pi) - log I0(2)
        tensor([-0.6619])
    """

    loc: Tensor
    log_concentration: Tensor

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        loc: float | Tensor = 0.0,
        concentration: float | Tensor = 1.0,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        dtype = torch.get_default_dtype()
        try:
            loc_t = torch.as_tensor(loc, dtype=dtype).expand(self.event_shape).clone()
            kappa = torch.as_tensor(concentration, dtype=dtype).expand(self.event_shape).clone()
        except RuntimeError:
            raise ValueError(
                f"VonMises expects loc and concentration that broadcast to the event shape "
                f"{tuple(self.event_shape)}, got shapes {tuple(torch.as_tensor(loc).shape)} and "
                f"{tuple(torch.as_tensor(concentration).shape)}"
            ) from None
        if not bool(torch.isfinite(loc_t).all()):
            raise ValueError(f"VonMises expects a finite loc, got {loc_t.tolist()}")
        if not bool(((kappa > 0) & torch.isfinite(kappa)).all()):
            raise ValueError(
                f"VonMises expects a positive finite concentration, got {kappa.tolist()}"
            )
        if learnable:
            self.loc = nn.Parameter(loc_t)
            self.log_concentration = nn.Parameter(kappa.log())
        else:
            self.register_buffer("loc", loc_t)
            self.register_buffer("log_concentration", kappa.log())

    @property
    def support(self) -> constraints.Constraint:
        r""":math:`[-\pi, \pi)` in every coordinate, over whole events."""
        return _angles(self.event_shape)

    @property
    def concentration(self) -> Tensor:
        r""":math:`\kappa`, of shape ``event_shape``."""
        return self.log_concentration.exp()

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The normalised von Mises log-density, summed over the event; ``context`` is unused."""
        self._check_event(z)
        kappa = self.concentration
        log_i0 = torch.log(torch.special.i0e(kappa)) + kappa
        log_density = kappa * torch.cos(z - self.loc) - LOG_TWO_PI - log_i0
        return sum_rightmost(log_density, len(self.event_shape))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        r"""Draw ``n`` angles in :math:`[-\pi, \pi)` at concentration :math:`\kappa / T^2`."""
        temperature = check_temperature("VonMises.sample", temperature)
        if temperature <= 0:
            raise ValueError(f"VonMises samples at temperatures > 0, got {temperature}")
        shape = sample_shape_of(n, "VonMises.sample")
        with torch.no_grad():
            kappa = self.concentration.detach() / temperature**2
            draws = torch.distributions.VonMises(self.loc.detach(), kappa).sample(shape)
        wrapped = torch.remainder(draws + math.pi, 2.0 * math.pi) - math.pi
        return torch.where(wrapped >= math.pi, wrapped - 2.0 * math.pi, wrapped)

    def extra_repr(self) -> str:
        """Describe the event shape in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}"
