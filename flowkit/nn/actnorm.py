"""Activation normalisation: a per-channel affine map whose statistics come from a first batch."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowkit.initialization import DataDependentInit

__all__ = ["INIT_STD_EPS", "MIN_INIT_STD", "ActNorm", "ActNormBase"]

# Official Glow adds this to the standard deviation before taking its reciprocal at init.
INIT_STD_EPS = 1e-6
# A channel whose standard deviation at initialisation is at most this is taken as constant: its
# scale 1 / (std + INIT_STD_EPS) would be dominated by INIT_STD_EPS (about 1e6 for exactly constant
# data) and every log-density of the model absurd.
MIN_INIT_STD = 10 * INIT_STD_EPS
# Constant data far from zero shows a spread of a few ulps after rounding: also taken as constant
# is a standard deviation up to this many machine epsilons times |mean|.
_ROUNDING_EPSILONS = 8


class ActNormBase(DataDependentInit):
    r"""Parameters and data-dependent initialisation of activation normalisation.

    The map is :math:`y = (x + b) \odot e^{s}` per channel, with the log-scale stored divided by
    ``log_scale_factor`` (the official Glow code keeps ``logs / 3``, which triples the effective
    learning rate of the scale): :math:`s = ` ``log_scale * log_scale_factor``, computed by
    :meth:`applied_log_scale` and nowhere else. :func:`flowkit.initialize` sets ``bias`` and
    ``log_scale`` from a batch so that each channel of ``y`` has zero mean and standard deviation
    ``scale`` over batch and spatial positions; until then the map is the identity. Given
    ``spatial_shape``, ``b`` and ``s`` are kept per channel *and position* (Flow++'s official
    ``Norm``), each set from the batch alone.

    Used by the network layer :class:`ActNorm` and by the bijector
    :class:`flowkit.bijectors.ActNorm`.

    Args:
        channels: Number of channels ``C`` (the first event dimension).
        event_rank: 3 for images ``(C, H, W)``, 1 for vectors ``(C,)``.
        log_scale_factor: Multiplier between the stored and the applied log-scale.
        scale: Target standard deviation after initialisation.
        spatial_shape: The ``event_rank - 1`` spatial sizes, for parameters per position; None
            for parameters per channel.
    """

    def __init__(
        self,
        channels: int,
        *,
        event_rank: int = 3,
        log_scale_factor: float = 3.0,
        scale: float = 1.0,
        spatial_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if channels < 1 or event_rank < 1:
            raise ValueError(
                f"{name} expects channels >= 1 and event_rank >= 1, got {channels} and {event_rank}"
            )
        self.channels = int(channels)
        self.event_rank = int(event_rank)
        self.log_scale_factor = float(log_scale_factor)
        self.scale = float(scale)
        self.spatial_shape: tuple[int, ...] | None = None
        if spatial_shape is not None:
            sizes = tuple(spatial_shape)
            if len(sizes) != self.event_rank - 1 or not all(
                isinstance(size, int) and size >= 1 for size in sizes
            ):
                raise ValueError(
                    f"{name} expects spatial_shape as {self.event_rank - 1} positive ints "
                    f"(event_rank - 1), got {spatial_shape!r}"
                )
            self.spatial_shape = sizes
        param_shape = (self.channels,) + (self.spatial_shape or (1,) * (self.event_rank - 1))
        self.bias = nn.Parameter(torch.zeros(param_shape))
        self.log_scale = nn.Parameter(torch.zeros(param_shape))

    def applied_log_scale(self) -> Tensor:
        """The log-scale :math:`s` the map applies: ``log_scale * log_scale_factor``."""
        return self.log_scale * self.log_scale_factor

    def normalize(self, x: Tensor) -> Tensor:
        """The map :math:`(x + b) e^{s}` alone, without shape checks or log-determinant."""
        self._init_from(x)
        return (x + self.bias) * torch.exp(self.applied_log_scale())

    def folded_scale_and_shift(self) -> tuple[Tensor, Tensor]:
        r"""``(a, c)``, each of shape ``(C,)``, with :math:`(x + b) e^{s} = a x + c`.

        For folding the map into the linear layer before it:
        :math:`(W x + d + b) e^{s} = (e^{s} W) x + e^{s} (d + b)`.
        """
        self._check_initialized()
        if self.spatial_shape is not None:
            raise ValueError(
                f"{type(self).__name__} with a scale per position cannot be folded into a "
                "convolution"
            )
        scale = torch.exp(self.applied_log_scale()).flatten()
        return scale, self.bias.flatten() * scale

    def _initialize_from(self, x: Tensor) -> None:
        name = type(self).__name__
        channel_dim = x.dim() - self.event_rank
        if self.spatial_shape is None:
            reduce_dims = [d for d in range(x.dim()) if d != channel_dim]
        else:
            reduce_dims = list(range(channel_dim))
        per_channel = math.prod(x.shape[d] for d in reduce_dims)
        if per_channel < 2:
            # One value per channel has zero spread: the scale would become 1 / INIT_STD_EPS.
            raise ValueError(
                f"{name} initialisation needs at least 2 values per channel (batch size times "
                f"positions, or the batch size alone with a scale per position), got "
                f"{per_channel} from input shape {tuple(x.shape)}; initialise with a larger batch"
            )
        mean = x.mean(dim=reduce_dims, keepdim=True)
        std = (x - mean).square().mean(dim=reduce_dims, keepdim=True).sqrt()
        rounding = _ROUNDING_EPSILONS * torch.finfo(x.dtype).eps * mean.abs()
        threshold = rounding.clamp_min(MIN_INIT_STD)
        constant = (std <= threshold).flatten()
        if bool(constant.any()):
            channels = torch.nonzero(constant).flatten().tolist()
            stds = std.flatten()[constant].tolist()
            limits = threshold.flatten()[constant].tolist()
            listed = ", ".join(
                f"{c} (std {s:.3g}, needs > {t:.3g})"
                for c, s, t in zip(channels[:8], stds[:8], limits[:8])
            )
            more = f" and {len(channels) - 8} more" if len(channels) > 8 else ""
            raise ValueError(
                f"{name} initialisation expects every channel to vary across the batch, with a "
                f"standard deviation above {MIN_INIT_STD:g} (or {_ROUNDING_EPSILONS} machine "
                f"epsilons times |mean|, if larger); got constant channel(s) {listed}{more} in "
                f"input of shape {tuple(x.shape)}. Its scale would be 1 / std; drop or "
                "dequantise such channels, or initialise with a batch in which they vary"
            )
        log_scale = torch.log(self.scale / (std + INIT_STD_EPS)) / self.log_scale_factor
        self.bias.copy_(-mean.reshape(self.bias.shape))
        self.log_scale.copy_(log_scale.reshape(self.log_scale.shape))

    def extra_repr(self) -> str:
        """Channels and event rank, for ``repr``."""
        spatial = "" if self.spatial_shape is None else f", spatial_shape={self.spatial_shape}"
        return f"{self.channels}, event_rank={self.event_rank}{spatial}"


class ActNorm(ActNormBase):
    r"""Activation normalisation as a network layer: :math:`y = (x + b) \odot e^{s}` per channel.

    The layer of Glow's coupling networks (after each hidden convolution). Its parameters are set
    from data by :func:`flowkit.initialize`; see :class:`ActNormBase`.

    Args:
        channels: Number of channels ``C``.
        event_rank: 3 for images ``(C, H, W)``, 1 for vectors ``(C,)``.
        log_scale_factor: Multiplier between the stored and the applied log-scale.
        scale: Target standard deviation after initialisation.

    Shapes:
        ``x``: ``(*batch, C, *spatial)`` with ``event_rank - 1`` spatial dims; the output the same.

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions (2018), 3.1.

    Example:
        >>> import flowkit
        >>> layer = flowkit.initialize(ActNorm(3), torch.randn(64, 3, 8, 8) * 4 + 1)
        >>> y = layer(torch.randn(64, 3, 8, 8) * 4 + 1)
        >>> bool(abs(y.std() - 1) < 0.1)
        True
    """

    def forward(self, x: Tensor) -> Tensor:
        """Scale and shift ``x`` per channel."""
        return self.normalize(x)
