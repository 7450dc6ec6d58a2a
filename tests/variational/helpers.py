"""Gaussian flows whose density is known in closed form, for checking estimators exactly."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowkit.bijectors import Affine
from flowkit.distributions import Flow, StandardNormal


def gaussian_flow(mean: Sequence[float], scale: Sequence[float]) -> Flow:
    """A float64 flow equal to N(mean, diag(scale^2)): x = scale * z + mean, z ~ N(0, I)."""
    dim = len(mean)
    flow = Flow(StandardNormal((dim,)), Affine(shape=(dim,), event_rank=1)).double()
    mean_t = torch.tensor(mean, dtype=torch.float64)
    scale_t = torch.tensor(scale, dtype=torch.float64)
    with torch.no_grad():
        # The bijector maps data to latent: z = x e^s + b, so e^s = 1 / scale, b = -mean / scale.
        flow.bijector.log_scale.copy_(-scale_t.log())
        flow.bijector.shift.copy_(-mean_t / scale_t)
    return flow


def gaussian_kl(
    mean_q: torch.Tensor, scale_q: torch.Tensor, mean_p: torch.Tensor, scale_p: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over dimensions (differentiable)."""
    return (
        torch.log(scale_p / scale_q)
        + (scale_q.square() + (mean_q - mean_p).square()) / (2 * scale_p.square())
        - 0.5
    ).sum()


def log_one_plus_chi_square(
    mean_q: torch.Tensor, scale_q: torch.Tensor, mean_p: torch.Tensor, scale_p: torch.Tensor
) -> torch.Tensor:
    """log E_q[(p/q)^2] = log(1 + chi^2(p || q)) for diagonal Gaussians (needs 2 sq^2 > sp^2).

    Differentiable; summed over dimensions.
    """
    spread = 2 * scale_q.square() - scale_p.square()
    per_dimension = (
        torch.log(scale_q.square() / (scale_p * spread.sqrt()))
        + (mean_p - mean_q).square() / spread
    )
    return per_dimension.sum()
