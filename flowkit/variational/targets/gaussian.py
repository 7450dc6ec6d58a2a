"""An unnormalised diagonal Gaussian: a target with exact log Z and samples in any dimension."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit.variational.targets.base import Target

__all__ = ["Gaussian"]


def _vector(owner: str, name: str, value: Tensor | Sequence[float]) -> Tensor:
    vector = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if vector.dim() != 1 or vector.numel() == 0:
        raise ValueError(
            f"{owner} expects {name} as a non-empty vector, got shape {tuple(vector.shape)}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"{owner} expects finite {name}, got {vector.tolist()}")
    return vector


class Gaussian(Target):
    r"""Unnormalised Gaussian :math:`\log \tilde p(x) = -\frac12 \sum_i ((x_i - \mu_i)/\sigma_i)^2`.

    Its normalising constant is :math:`\log Z = \sum_i \log(\sigma_i \sqrt{2\pi})`, so it is the
    reference target for checking estimates of :math:`\log Z`.

    Args:
        mean: The mean :math:`\mu`, shape ``(dim,)``.
        scale: The standard deviations :math:`\sigma > 0`, shape ``(dim,)``.

    Example:
        >>> target = Gaussian([0.0, 1.0], [1.0, 2.0])
        >>> target(torch.tensor([[1.0, 1.0]]))
        tensor([-0.5000])
        >>> round(target.log_z, 4)
        2.531
    """

    mean: Tensor
    scale: Tensor
    can_sample = True

    def __init__(self, mean: Tensor | Sequence[float], scale: Tensor | Sequence[float]) -> None:
        mean_vector = _vector("Gaussian", "mean", mean)
        scale_vector = _vector("Gaussian", "scale", scale)
        if scale_vector.shape != mean_vector.shape:
            raise ValueError(
                f"Gaussian expects scale of the mean's shape {tuple(mean_vector.shape)}, got "
                f"{tuple(scale_vector.shape)}"
            )
        if not bool((scale_vector > 0).all()):
            raise ValueError(f"Gaussian expects positive scales, got {scale_vector.tolist()}")
        log_z = float(scale_vector.log().sum()) + mean_vector.numel() * 0.5 * math.log(2 * math.pi)
        super().__init__(mean_vector.numel(), log_z)
        self.register_buffer("mean", mean_vector, persistent=False)
        self.register_buffer("scale", scale_vector, persistent=False)

    def _log_density(self, x: Tensor) -> Tensor:
        standardized = (x - self.mean.to(x)) / self.scale.to(x)
        return -0.5 * standardized.square().sum(-1)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean.cpu() + self.scale.cpu() * noise
