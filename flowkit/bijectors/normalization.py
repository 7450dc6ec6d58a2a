"""Normalisation bijectors: ActNorm with data-dependent initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowkit._utils import check_event_shape
from flowkit.bijectors.base import Bijector, Shape
from flowkit.initialization import DataDependentInit

__all__ = ["ActNorm"]

# Official Glow adds this to the standard deviation before taking its reciprocal at init.
INIT_STD_EPS = 1e-6


class ActNorm(DataDependentInit, Bijector):
    r"""Activation normalisation: a per-channel affine map :math:`z = (x + b) \odot e^{s}`.

    ``s`` is stored divided by ``log_scale_factor`` (the official Glow code keeps ``logs / 3``, which
    triples the effective learning rate of the scale). :func:`flowkit.initialize` sets ``b`` and
    ``s`` from a batch so that each channel of ``z`` has zero mean and unit variance over batch and
    spatial positions; until then the map is the identity. That needs at least two values per
    channel: a single vector (or a single pixel per channel) raises a ValueError rather than set a
    scale of ``1 / INIT_STD_EPS``.

    :math:`\log|\det J| = (\prod \text{spatial sizes}) \sum_c s_c`.

    Args:
        channels: Number of channels ``C`` (the first event dimension).
        event_rank: 3 for images ``(C, H, W)``, 1 for vectors ``(C,)``.
        log_scale_factor: Multiplier between the stored and the applied log-scale.
        scale: Target standard deviation after initialisation.

    Shapes:
        ``x``: ``(*batch, C, *spatial)`` with ``event_rank - 1`` spatial dims; ``z`` the same;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions (2018), 3.1.

    Example:
        >>> import flowkit
        >>> norm = flowkit.initialize(ActNorm(3), torch.randn(64, 3, 8, 8) * 4 + 1)
        >>> z, _ = norm(torch.randn(64, 3, 8, 8) * 4 + 1)
        >>> bool(abs(z.std() - 1) < 0.1)
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        event_rank: int = 3,
        log_scale_factor: float = 3.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if channels < 1 or event_rank < 1:
            raise ValueError(
                f"ActNorm expects channels >= 1 and event_rank >= 1, got {channels} and {event_rank}"
            )
        self.channels = int(channels)
        self.event_rank = int(event_rank)
        self.log_scale_factor = float(log_scale_factor)
        self.scale = float(scale)
        param_shape = (self.channels,) + (1,) * (self.event_rank - 1)
        self.bias = nn.Parameter(torch.zeros(param_shape))
        self.log_scale = nn.Parameter(torch.zeros(param_shape))

    def _event_pattern(self) -> tuple[int | None, ...]:
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def _initialize_from(self, x: Tensor) -> None:
        per_channel = x.numel() // max(x.shape[x.dim() - self.event_rank], 1)
        if per_channel < 2:
            # One value per channel has zero spread: the scale would become 1 / INIT_STD_EPS.
            raise ValueError(
                f"ActNorm initialisation needs at least 2 values per channel (batch size times "
                f"positions), got {per_channel} from input shape {tuple(x.shape)}; initialise "
                "with a larger batch"
            )
        reduce_dims = [d for d in range(x.dim()) if d != x.dim() - self.event_rank]
        mean = x.mean(dim=reduce_dims, keepdim=True)
        std = (x - mean).square().mean(dim=reduce_dims, keepdim=True).sqrt()
        log_scale = torch.log(self.scale / (std + INIT_STD_EPS)) / self.log_scale_factor
        self.bias.copy_(-mean.reshape(self.bias.shape))
        self.log_scale.copy_(log_scale.reshape(self.log_scale.shape))

    def _log_abs_det(self, x: Tensor, log_scale: Tensor) -> Tensor:
        positions = math.prod(x.shape[x.dim() - self.event_rank + 1 :])
        return (log_scale.sum() * positions).expand(x.shape[: x.dim() - self.event_rank])

    def normalize(self, x: Tensor) -> Tensor:
        """The map alone, without shape checks or log-determinant (for use inside networks)."""
        self._init_from(x)
        return (x + self.bias) * torch.exp(self.log_scale * self.log_scale_factor)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("ActNorm", x, self._event_pattern())
        z = self.normalize(x)
        return z, self._log_abs_det(x, self.log_scale * self.log_scale_factor)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("ActNorm", z, self._event_pattern(), "latent")
        log_scale = self.log_scale * self.log_scale_factor
        x = z * torch.exp(-log_scale) - self.bias
        return x, -self._log_abs_det(z, log_scale)

    def forward_shape(self, shape: Shape) -> torch.Size:
        check_event_shape("ActNorm", shape, self._event_pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, event_rank={self.event_rank}"
