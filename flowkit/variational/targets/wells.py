"""The double well and the many-well of Boltzmann-generator benchmarks, with exact log Z."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from flowkit._checks import check_choice, check_int
from flowkit.variational.targets.base import Target

__all__ = ["DoubleWell", "ManyWell", "double_well_log_z"]

# The FAB paper's double well: energy a x + b x^2 + c x^4 in the first coordinate.
WELL_A, WELL_B, WELL_C = -0.5, -6.0, 1.0
# Quadrature of the first coordinate: beyond |x| = 6 the density is below exp(-1000) of its peak,
# and the integrand is smooth and decays faster than any power, so the trapezoidal rule on this
# grid is accurate to double precision (tests check it against scipy's adaptive quadrature).
QUADRATURE_BOUND = 6.0
QUADRATURE_POINTS = 120_001
# Rejection sampling of the first coordinate from 0.2 N(-1.7, 0.5^2) + 0.8 N(1.7, 0.5^2): the
# unnormalised density never exceeds 2.6 Z times the proposal's (its largest ratio, 2.59 Z, was
# found on a grid over [-4, 4]; further out the proposal decays far more slowly), so 3 Z bounds
# it with a margin, as in the FAB code; a third of the proposals are accepted.
PROPOSAL_WEIGHTS = (0.2, 0.8)
PROPOSAL_MEANS = (-1.7, 1.7)
PROPOSAL_SCALE = 0.5
REJECTION_BOUND = 3.0


def _first_coordinate_log_density(x: Tensor) -> Tensor:
    return -(WELL_A * x + WELL_B * x**2 + WELL_C * x**4)


@functools.lru_cache(maxsize=1)
def _first_coordinate_log_z() -> float:
    grid = torch.linspace(
        -QUADRATURE_BOUND, QUADRATURE_BOUND, QUADRATURE_POINTS, dtype=torch.float64
    )
    log_density = _first_coordinate_log_density(grid)
    peak = float(log_density.max())
    integral = torch.trapezoid(torch.exp(log_density - peak), grid)
    return peak + math.log(float(integral))


def double_well_log_z(dim: int = 2) -> float:
    r"""The log normalising constant of the :class:`DoubleWell` in ``dim`` (1 or 2) dimensions.

    :math:`\log \int e^{-x^4 + 6 x^2 + x/2} dx`, by the trapezoidal rule on 120,001 points over
    :math:`[-6, 6]` in float64 (computed once), plus :math:`\frac12 \log 2\pi` for the second
    coordinate's standard normal when ``dim`` is 2.

    Example:
        >>> round(double_well_log_z(), 6), round(double_well_log_z(1), 6)
        (10.29348, 9.374541)
    """
    check_choice("double_well_log_z", "dim", dim, (1, 2))
    return _first_coordinate_log_z() + (dim - 1) * 0.5 * math.log(2 * math.pi)


def _sample_first_coordinate(count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` exact draws of the double well's first coordinate, by rejection sampling."""
    weights = torch.tensor(PROPOSAL_WEIGHTS, dtype=torch.float64)
    means = torch.tensor(PROPOSAL_MEANS, dtype=torch.float64)
    log_bound = math.log(REJECTION_BOUND) + _first_coordinate_log_z()
    accepted: list[Tensor] = [torch.empty(0, dtype=torch.float64)]
    got = 0
    while got < count:
        # About a third is accepted: draw enough proposals to finish in one round most times.
        draws = max(64, 4 * (count - got))
        component = torch.multinomial(weights, draws, replacement=True, generator=generator)
        proposal = means[component] + PROPOSAL_SCALE * torch.randn(
            draws, generator=generator, dtype=torch.float64
        )
        standardized = (proposal[:, None] - means) / PROPOSAL_SCALE
        log_proposal = torch.logsumexp(
            weights.log()
            - 0.5 * standardized.square()
            - math.log(PROPOSAL_SCALE)
            - 0.5 * math.log(2 * math.pi),
            dim=-1,
        )
        uniform = torch.rand(draws, generator=generator, dtype=torch.float64)
        keep = uniform.log() + log_bound + log_proposal < _first_coordinate_log_density(proposal)
        accepted.append(proposal[keep])
        got += int(keep.sum())
    return torch.cat(accepted)[:count]


def _sample_pairs(n: int, pairs: int, generator: torch.Generator | None) -> Tensor:
    """``n`` exact draws of ``pairs`` independent double-well pairs, shape ``(n, 2 * pairs)``."""
    first = _sample_first_coordinate(n * pairs, generator).reshape(n, pairs)
    second = torch.randn(n, pairs, generator=generator, dtype=torch.float64)
    return torch.stack([first, second], dim=-1).reshape(n, 2 * pairs)


class ManyWell(Target):
    r"""The many-well: ``dim / 2`` independent double-well pairs (FAB paper, 32-D by default).

    Coordinates ``(x_{2k}, x_{2k+1})`` form pair ``k``, each with the :class:`DoubleWell` energy, so
    the target has :math:`2^{dim/2}` modes and
    :math:`\log Z = (dim / 2) \cdot` :func:`double_well_log_z` exactly. Exact sampler: rejection
    sampling of each pair's first coordinate, a standard normal second coordinate.

    Args:
        dim: An even number of dimensions.

    References:
        Noé, Olsson, Köhler & Wu, Boltzmann generators (Science, 2019), the double well;
        Midgley et al., Flow Annealed Importance Sampling Bootstrap (ICLR 2023), the many-well.

    Example:
        >>> target = ManyWell(32)
        >>> round(target.log_z, 4)
        164.6957
        >>> target.sample(4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 32])
    """

    can_sample = True

    def __init__(self, dim: int = 32) -> None:
        dim = check_int(type(self).__name__, "dim", dim, 2)
        if dim % 2:
            raise ValueError(f"{type(self).__name__} expects an even dim, got {dim}")
        self.pairs = dim // 2
        super().__init__(dim, self.pairs * double_well_log_z())

    def _log_density(self, x: Tensor) -> Tensor:
        first, second = x[:, 0::2], x[:, 1::2]
        return (_first_coordinate_log_density(first) - 0.5 * second.square()).sum(-1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        return _sample_pairs(n, self.pairs, generator)


class DoubleWell(Target):
    r"""The double well :math:`E(x) = x_1^4 - 6 x_1^2 - \frac12 x_1 + \frac12 x_2^2`, in 2-D or 1-D.

    :math:`\log \tilde p = -E`; a shallow well near :math:`x_1 = -1.7` and a deep one near
    :math:`+1.7` holding 85 % of the mass. In 2-D it is the one-pair :class:`ManyWell`; in 1-D
    only :math:`x_1`. :math:`\log Z` from :func:`double_well_log_z`, an exact sampler (rejection
    sampling of :math:`x_1`).

    Args:
        dim: 2 (FAB's double well) or 1 (its first coordinate).

    Example:
        >>> DoubleWell()(torch.tensor([[1.7, 0.0]])) > DoubleWell()(torch.tensor([[-1.7, 0.0]]))
        tensor([True])
        >>> DoubleWell(1).sample(3).shape
        torch.Size([3, 1])
    """

    can_sample = True

    def __init__(self, dim: int = 2) -> None:
        check_choice("DoubleWell", "dim", dim, (1, 2))
        super().__init__(dim, double_well_log_z(dim))

    def _log_density(self, x: Tensor) -> Tensor:
        value = _first_coordinate_log_density(x[:, 0])
        return value - 0.5 * x[:, 1].square() if self.dim == 2 else value

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        if self.dim == 1:
            return _sample_first_coordinate(n, generator)[:, None]
        return _sample_pairs(n, 1, generator)
