"""UniformBox: the uniform distribution on an axis-aligned box, a base for bounded-domain flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import constraints

from flowkit._tensors import sum_rightmost
from flowkit.distributions._inputs import check_temperature
from flowkit.distributions.base import Distribution, SampleShape, sample_shape_of

__all__ = ["UniformBox"]


class UniformBox(Distribution):
    r"""Uniform distribution on the box :math:`[a, b] = \prod_i [a_i, b_i]`.

    :math:`\log p(z) = -\sum_i \log(b_i - a_i)` inside the box (boundary included) and
    :math:`-\infty` outside it. A base for flows whose last layers map onto a bounded domain,
    e.g. spline flows on :math:`[-B, B]^D` or flows on the unit cube.

    ``sample(..., temperature=T)`` shrinks the box about its centre :math:`c = (a + b) / 2`:
    :math:`z = c + T (u - c)` with :math:`u` uniform on the box, the analogue of drawing Gaussian
    noise at a reduced standard deviation. Only :math:`0 < T \le 1` keeps the samples in the
    support; larger temperatures raise a ValueError.

    Args:
        low: Lower corner :math:`a`: a number or a tensor broadcasting to ``event_shape``.
        high: Upper corner :math:`b`, greater than ``low`` everywhere.
        event_shape: Shape of one event.

    Shapes:
        ``log_prob``: ``z`` of shape ``(*batch, *event_shape)`` gives ``(*batch,)``;
        ``sample(n)``: ``(*n, *event_shape)``.

    Example:
        >>> base = UniformBox(-3.0, 3.0, (2,))
        >>> base.log_prob(torch.tensor([[0.0, 1.0], [0.0, 4.0]]))
        tensor([-3.5835,    -inf])
    """

    low: Tensor
    high: Tensor

    def __init__(
        self, low: float | Tensor, high: float | Tensor, event_shape: Sequence[int]
    ) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        try:
            low_t = torch.as_tensor(low, dtype=torch.get_default_dtype()).expand(self.event_shape)
            high_t = torch.as_tensor(high, dtype=torch.get_default_dtype()).expand(self.event_shape)
        except RuntimeError:
            raise ValueError(
                f"UniformBox expects low and high that broadcast to the event shape "
                f"{tuple(self.event_shape)}, got shapes {tuple(torch.as_tensor(low).shape)} and "
                f"{tuple(torch.as_tensor(high).shape)}"
            ) from None
        if not bool(torch.isfinite(low_t).all() & torch.isfinite(high_t).all()):
            raise ValueError("UniformBox expects finite low and high")
        if not bool((low_t < high_t).all()):
            where = tuple(int(i) for i in (low_t >= high_t).nonzero()[0])
            raise ValueError(
                f"UniformBox expects low < high everywhere, got low {low_t[where].item()} >= "
                f"high {high_t[where].item()} at index {where}"
            )
        self.register_buffer("low", low_t.clone())
        self.register_buffer("high", high_t.clone())

    @property
    def support(self) -> constraints.Constraint:
        """The box, as a ``torch.distributions`` constraint over whole events."""
        return constraints.independent(
            constraints.interval(self.low, self.high), len(self.event_shape)
        )

    def log_volume(self) -> Tensor:
        r""":math:`\sum_i \log(b_i - a_i)`, the log of the box's volume."""
        return sum_rightmost(torch.log(self.high - self.low), len(self.event_shape))

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Minus the log-volume inside the box, ``-inf`` outside; ``context`` is unused."""
        self._check_event(z)
        rank = len(self.event_shape)
        inside = (z >= self.low) & (z <= self.high)
        inside = inside.flatten(z.dim() - rank).all(-1) if rank else inside
        log_density = -self.log_volume().to(z.dtype)
        return torch.where(inside, log_density, torch.full_like(log_density, -math.inf))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw ``n`` samples, uniform on the box shrunk by ``temperature`` about its centre."""
        temperature = check_temperature("UniformBox.sample", temperature)
        if not 0.0 < temperature <= 1.0:
            raise ValueError(
                f"UniformBox samples at temperatures in (0, 1] (which shrink the box about its "
                f"centre), got {temperature}"
            )
        shape = sample_shape_of(n, "UniformBox.sample") + self.event_shape
        u = torch.rand(shape, dtype=self.low.dtype, device=self.low.device)
        z = self.low + (self.high - self.low) * u
        if temperature != 1.0:
            centre = 0.5 * (self.low + self.high)
            z = centre + temperature * (z - centre)
        return z

    def extra_repr(self) -> str:
        """Describe the event shape in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}"
