"""Gaussian mixtures, and the 40-mode mixture in two dimensions of the FAB paper."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional
from torch import Tensor

from flowkit._checks import check_float, check_int
from flowkit.variational.targets.base import Target

__all__ = ["GaussianMixture", "gmm40"]

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class GaussianMixture(Target):
    r"""Mixture of diagonal Gaussians, normalised: :math:`\log Z = 0`.

    :math:`p(x) = \sum_k \pi_k \prod_i N(x_i; \mu_{ki}, \sigma_{ki}^2)`.

    Args:
        means: Component means, shape ``(K, dim)``.
        scales: Component standard deviations, shape ``(K, dim)`` (or broadcastable to it).
        weights: Mixture weights :math:`\pi`, shape ``(K,)``, positive (normalised here);
            None for equal weights.

    Example:
        >>> mixture = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.ones(1))
        >>> mixture.sample(1000, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1000, 1])
    """

    means: Tensor
    scales: Tensor
    log_weights: Tensor
    can_sample = True

    def __init__(self, means: Tensor, scales: Tensor, weights: Tensor | None = None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64).detach().clone()
        if means.dim() != 2 or means.numel() == 0:
            raise ValueError(
                f"GaussianMixture expects means of shape (K, dim), got {tuple(means.shape)}"
            )
        try:
            scales = torch.as_tensor(scales, dtype=torch.float64).expand_as(means).clone()
        except RuntimeError:
            raise ValueError(
                f"GaussianMixture expects scales broadcastable to the means' shape "
                f"{tuple(means.shape)}, got {tuple(torch.as_tensor(scales).shape)}"
            ) from None
        if not bool((scales > 0).all()) or not bool(torch.isfinite(means).all()):
            raise ValueError("GaussianMixture expects finite means and positive finite scales")
        count = means.shape[0]
        if weights is None:
            weights = torch.ones(count, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).detach().clone()
        if weights.shape != (count,) or not bool((weights > 0).all()):
            raise ValueError(
                f"GaussianMixture expects {count} positive weights, got shape "
                f"{tuple(weights.shape)}"
            )
        super().__init__(means.shape[1], 0.0)
        self.register_buffer("means", means, persistent=False)
        self.register_buffer("scales", scales, persistent=False)
        self.register_buffer("log_weights", (weights / weights.sum()).log(), persistent=False)

    @property
    def num_components(self) -> int:
        """The number of components ``K``."""
        return self.means.shape[0]

    def modes_found(self, samples: Tensor, *, within: float = 3.0, minimum: int = 1) -> int:
        r"""How many components hold at least ``minimum`` of ``samples`` near their mean.

        A sample is near component :math:`k` when its standardised distance
        :math:`\|(x - \mu_k) / \sigma_k\|` is at most ``within``; counting the components so
        visited measures how many modes a sampler (a fitted flow) found.

        Args:
            samples: Points of shape ``(n, dim)``.
            within: Radius in standard deviations.
            minimum: Samples a component needs to count as found.

        Example:
            >>> target = gmm40()
            >>> target.modes_found(target.sample(2000, generator=torch.Generator().manual_seed(0)))
            40
            >>> target.modes_found(target.means[:3])
            3
        """
        owner = "GaussianMixture.modes_found"
        if not isinstance(samples, Tensor) or samples.dim() != 2 or samples.shape[1] != self.dim:
            got = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
            raise ValueError(f"{owner} expects samples of shape (n, {self.dim}), got {got}")
        within = check_float(owner, "within", within, 0.0, exclusive_minimum=True)
        minimum = check_int(owner, "minimum", minimum, 1)
        x = samples.detach().to(torch.float64)
        means, scales = self.means.to(x.device), self.scales.to(x.device)
        distance = torch.linalg.vector_norm((x[:, None, :] - means) / scales, dim=-1)
        counts = (distance <= within).sum(0)
        return int((counts >= minimum).sum())

    def _log_density(self, x: Tensor) -> Tensor:
        means, scales = self.means.to(x), self.scales.to(x)
        standardized = (x[:, None, :] - means) / scales
        component = (-0.5 * standardized.square() - scales.log() - HALF_LOG_TWO_PI).sum(-1)
        return torch.logsumexp(component + self.log_weights.to(x), dim=-1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        probabilities = self.log_weights.cpu().exp()
        if n == 0:
            return torch.empty(0, self.dim, dtype=torch.float64)
        index = torch.multinomial(probabilities, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means.cpu()[index] + self.scales.cpu()[index] * noise


# The FAB paper's mixture: 40 equally weighted components in 2-D, means uniform in [-40, 40]^2
# drawn in float32 from torch's generator seeded 0 (as its experiment script), and every scale
# softplus(1.0) ~ 1.313 (its log_var_scaling 1.0 passed through a softplus).
GMM40_COMPONENTS = 40
GMM40_HALF_WIDTH = 40.0
GMM40_SCALE = float(functional.softplus(torch.tensor(1.0, dtype=torch.float64)))


def gmm40(seed: int = 0) -> GaussianMixture:
    r"""The 40-mode Gaussian mixture in two dimensions of the FAB paper (Midgley et al., 2023).

    Means are drawn uniformly in :math:`[-40, 40]^2` by ``(torch.rand(40, 2) - 0.5) * 80`` from a
    generator seeded ``seed`` (0 gives the paper's mixture), each component has standard
    deviation :math:`\mathrm{softplus}(1) \approx 1.313` in both coordinates and weight 1/40.
    Normalised: :math:`\log Z = 0`.

    Args:
        seed: Seed of the means.

    References:
        Midgley, Stimper, Simm, Schölkopf & Hernández-Lobato, Flow Annealed Importance Sampling
        Bootstrap (ICLR 2023).

    Example:
        >>> target = gmm40()
        >>> target.num_components, target.dim, target.log_z
        (40, 2, 0.0)
    """
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand((GMM40_COMPONENTS, 2), generator=generator)
    means = (unit - 0.5) * 2 * GMM40_HALF_WIDTH
    return GaussianMixture(means.double(), torch.full((1,), GMM40_SCALE, dtype=torch.float64))
