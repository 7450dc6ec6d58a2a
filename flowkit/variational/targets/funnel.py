"""Neal's funnel: a normalised density whose scale varies over orders of magnitude."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit._checks import check_float, check_int
from flowkit.variational.targets.base import Target

__all__ = ["Funnel"]

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class Funnel(Target):
    r"""Neal's funnel: :math:`v \sim N(0, \sigma^2)`, then :math:`x_i \mid v \sim N(0, e^{v})`.

    ``x[..., 0]`` is :math:`v` and ``x[..., 1:]`` the ``dim - 1`` coordinates :math:`x_i`, so
    :math:`\log p = \log N(v; 0, \sigma^2) + \sum_i \log N(x_i; 0, e^{v})`. Normalised
    (:math:`\log Z = 0`), with an exact sampler.

    Args:
        dim: Number of dimensions (at least 2).
        scale: The standard deviation :math:`\sigma` of :math:`v` (3 in Neal's paper).

    References:
        Neal, Slice sampling (Annals of Statistics, 2003).

    Example:
        >>> target = Funnel(10)
        >>> target.sample(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 10])
    """

    can_sample = True

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        super().__init__(check_int("Funnel", "dim", dim, 2), 0.0)
        self.scale = check_float("Funnel", "scale", scale, 0.0, exclusive_minimum=True)

    def _log_density(self, x: Tensor) -> Tensor:
        v, rest = x[:, 0], x[:, 1:]
        log_v = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - HALF_LOG_TWO_PI
        # N(x; 0, e^v) has log-density -x^2 e^{-v} / 2 - v / 2 - log sqrt(2 pi).
        log_rest = -0.5 * rest.square() * torch.exp(-v)[:, None] - 0.5 * v[:, None]
        return log_v + (log_rest - HALF_LOG_TWO_PI).sum(-1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        v = self.scale * torch.randn(n, 1, generator=generator, dtype=torch.float64)
        rest = torch.exp(0.5 * v) * torch.randn(
            n, self.dim - 1, generator=generator, dtype=torch.float64
        )
        return torch.cat([v, rest], dim=-1)
