"""Toy densities for testing and benchmarking flows: 2-D shapes and a known 10-D mixture."""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

__all__ = [
    "KnownMixture",
    "checkerboard",
    "eight_gaussians",
    "eight_gaussians_mixture",
    "gaussian_mixture_10d",
    "mixture_10d",
    "two_moons",
]

# The fixed 10-D mixture of mixture_10d(): weights, per-component scales and neighbour correlations.
MIXTURE_10D_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
MIXTURE_10D_SCALES = (0.5, 0.7, 1.0, 1.3)
MIXTURE_10D_COUPLINGS = (0.5, -0.5, 0.8, 0.0)
MIXTURE_10D_MEAN_AMPLITUDE = 2.5
MIXTURE_10D_DIMENSIONS = 10


def _check_count(name: str, n: int) -> int:
    try:
        count = operator.index(n)
    except TypeError:
        count = -1
    if count < 0 or isinstance(n, bool):
        raise ValueError(f"{name} expects a non-negative integer number of samples, got {n!r}")
    return count


class KnownMixture:
    r"""A Gaussian mixture with full covariances whose density is known in closed form.

    :math:`p(x) = \sum_k w_k N(x; \mu_k, L_k L_k^T)`, with Cholesky factors :math:`L_k`
    (lower-triangular, positive diagonal). Benchmarks sample training and test sets from it and
    report the true test log-likelihood next to a model's. Parameters are kept in float64.

    Args:
        weights: Mixture weights :math:`w_k`, shape ``(K,)``; positive, normalised here.
        means: Component means, shape ``(K, D)``.
        scale_trils: Cholesky factors :math:`L_k`, shape ``(K, D, D)``.

    Example:
        >>> means = torch.tensor([[-2.0], [2.0]])
        >>> mixture = KnownMixture(torch.ones(2), means, torch.ones(2, 1, 1))
        >>> x = mixture.sample(4, generator=torch.Generator().manual_seed(0))
        >>> mixture.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(self, weights: Tensor, means: Tensor, scale_trils: Tensor) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        scale_trils = torch.as_tensor(scale_trils, dtype=torch.float64)
        if weights.dim() != 1 or means.dim() != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(
                f"KnownMixture expects weights (K,) and means (K, D), got shapes "
                f"{tuple(weights.shape)} and {tuple(means.shape)}"
            )
        count, dims = means.shape
        if tuple(scale_trils.shape) != (count, dims, dims):
            raise ValueError(
                f"KnownMixture expects scale_trils of shape {(count, dims, dims)}, got "
                f"{tuple(scale_trils.shape)}"
            )
        if not bool((weights > 0).all()):
            raise ValueError(f"KnownMixture expects positive weights, got {weights.tolist()}")
        diagonals = torch.diagonal(scale_trils, dim1=-2, dim2=-1)
        if not bool((diagonals > 0).all()) or not torch.equal(scale_trils, scale_trils.tril()):
            raise ValueError(
                "KnownMixture expects lower-triangular scale_trils with a positive diagonal"
            )
        self.weights = weights / weights.sum()
        self.means = means
        self.scale_trils = scale_trils

    @property
    def dimensions(self) -> int:
        """Dimension ``D`` of the samples."""
        return self.means.shape[1]

    @property
    def covariances(self) -> Tensor:
        r""":math:`\Sigma_k = L_k L_k^T`, shape ``(K, D, D)``."""
        return self.scale_trils @ self.scale_trils.transpose(-1, -2)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` samples, shape ``(n, D)``; deterministic given ``generator``."""
        n = _check_count("KnownMixture.sample", n)
        if n == 0:
            return torch.zeros(0, self.dimensions, dtype=dtype)
        index = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dimensions, generator=generator, dtype=torch.float64)
        x = self.means[index] + (self.scale_trils[index] @ eps.unsqueeze(-1)).squeeze(-1)
        return x.to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` of shape ``(*batch, D)``, computed in float64, in ``x``'s dtype."""
        if x.shape[-1:] != (self.dimensions,):
            raise ValueError(
                f"KnownMixture expects values with {self.dimensions} features, got shape "
                f"{tuple(x.shape)}"
            )
        values = x.to(torch.float64).unsqueeze(-2)
        centred = (values - self.means).unsqueeze(-1)
        solved = torch.linalg.solve_triangular(
            self.scale_trils.expand(centred.shape[:-1] + (self.dimensions,)), centred, upper=False
        ).squeeze(-1)
        log_det = torch.log(torch.diagonal(self.scale_trils, dim1=-2, dim2=-1)).sum(-1)
        constant = 0.5 * self.dimensions * math.log(2 * math.pi)
        per_component = -0.5 * solved.square().sum(-1) - log_det - constant
        return torch.logsumexp(per_component + self.weights.log(), dim=-1).to(x.dtype)


def mixture_10d() -> KnownMixture:
    r"""The fixed 10-D, 4-component Gaussian mixture behind :func:`gaussian_mixture_10d`.

    Components :math:`k = 0, \dots, 3` in :math:`D = 10` dimensions:

    * weights :math:`w = (0.4, 0.3, 0.2, 0.1)`;
    * means :math:`\mu_{k,d} = 2.5 \cos(\pi (k + 1)(2d + 1) / 20)` (scaled DCT-II basis vectors:
      orthogonal, each of norm :math:`2.5 \sqrt{5} \approx 5.6`);
    * covariances :math:`L_k L_k^T` with lower-bidiagonal :math:`L_k = s_k (I + \rho_k J)`, where
      :math:`J` has ones on the first subdiagonal, :math:`s = (0.5, 0.7, 1.0, 1.3)` and
      :math:`\rho = (0.5, -0.5, 0.8, 0)`, so neighbouring coordinates are correlated within three
      of the components.
    """
    dims = MIXTURE_10D_DIMENSIONS
    k = torch.arange(len(MIXTURE_10D_WEIGHTS), dtype=torch.float64).unsqueeze(-1)
    d = torch.arange(dims, dtype=torch.float64)
    means = MIXTURE_10D_MEAN_AMPLITUDE * torch.cos(math.pi * (k + 1) * (2 * d + 1) / (2 * dims))
    shift = torch.diag(torch.ones(dims - 1, dtype=torch.float64), -1)
    eye = torch.eye(dims, dtype=torch.float64)
    trils = torch.stack(
        [
            scale * (eye + coupling * shift)
            for scale, coupling in zip(MIXTURE_10D_SCALES, MIXTURE_10D_COUPLINGS)
        ]
    )
    return KnownMixture(torch.tensor(MIXTURE_10D_WEIGHTS, dtype=torch.float64), means, trils)


def gaussian_mixture_10d(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n`` samples, shape ``(n, 10)``, of the fixed mixture :func:`mixture_10d`.

    Its exact log-density is ``mixture_10d().log_prob(x)``.

    Example:
        >>> x = gaussian_mixture_10d(100, generator=torch.Generator().manual_seed(0))
        >>> true_log_likelihood = mixture_10d().log_prob(x).mean()
    """
    return mixture_10d().sample(n, generator, dtype=dtype)


def two_moons(
    n: int,
    *,
    noise: float = 0.1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Two interleaving half circles with Gaussian noise, shape ``(n, 2)``.

    Each sample picks a moon with probability 1/2 and an angle :math:`t \sim U(0, \pi)`; the upper
    moon is :math:`(\cos t, \sin t)`, the lower :math:`(1 - \cos t, 1/2 - \sin t)`. Both are shifted
    by :math:`(-1/2, -1/4)` (centring the pair) and get :math:`N(0, \text{noise}^2 I)` noise.

    Example:
        >>> two_moons(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    n = _check_count("two_moons", n)
    if noise < 0:
        raise ValueError(f"two_moons expects noise >= 0, got {noise}")
    lower = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper_moon = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    lower_moon = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=-1)
    points = torch.where(lower.unsqueeze(-1), lower_moon, upper_moon)
    points = points + torch.tensor([-0.5, -0.25], dtype=torch.float64)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.to(dtype)


def checkerboard(
    n: int,
    *,
    squares: int = 4,
    half_width: float = 4.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Uniform samples on the dark squares of a checkerboard, shape ``(n, 2)``.

    The board covers :math:`[-h, h]^2` (``h = half_width``) with ``squares x squares`` cells; cell
    :math:`(i, j)` (column :math:`i` along the first coordinate, row :math:`j` along the second,
    both from the lower left) is dark when :math:`i + j` is even. The density is
    :math:`1 / (\text{dark cells} \cdot \text{cell area})` on dark cells and 0 elsewhere
    (:math:`1/32` with the defaults, as the FFJORD checkerboard).

    Example:
        >>> checkerboard(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    n = _check_count("checkerboard", n)
    if squares < 1 or not half_width > 0:
        raise ValueError(
            f"checkerboard expects squares >= 1 and half_width > 0, got {squares} and {half_width}"
        )
    cells = [(i, j) for i in range(squares) for j in range(squares) if (i + j) % 2 == 0]
    cells_tensor = torch.tensor(cells, dtype=torch.float64)
    index = torch.randint(len(cells), (n,), generator=generator)
    offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    side = 2 * half_width / squares
    points = (cells_tensor[index] + offset) * side - half_width
    return points.to(dtype)


def eight_gaussians_mixture(*, radius: float = 2.0, std: float = 0.2) -> KnownMixture:
    r"""Eight equally weighted isotropic Gaussians on a circle, as a :class:`KnownMixture`.

    Centre :math:`k` is :math:`r (\cos(2\pi k / 8), \sin(2\pi k / 8))`, every component has
    covariance :math:`\text{std}^2 I`.
    """
    if not radius >= 0 or not std > 0:
        raise ValueError(f"eight_gaussians expects radius >= 0 and std > 0, got {radius} and {std}")
    angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    trils = std * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return KnownMixture(torch.ones(8), means, trils)


def eight_gaussians(
    n: int,
    *,
    radius: float = 2.0,
    std: float = 0.2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` samples, shape ``(n, 2)``, of :func:`eight_gaussians_mixture` (density known).

    Example:
        >>> eight_gaussians(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    return eight_gaussians_mixture(radius=radius, std=std).sample(n, generator, dtype=dtype)
