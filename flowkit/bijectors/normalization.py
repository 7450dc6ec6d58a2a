"""Normalisation bijectors: ActNorm (data-dependent initialisation) and BatchNorm."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowkit._tensors import check_event_shape
from flowkit.bijectors.base import Bijector, InverseNotAvailable, Shape
from flowkit.nn.actnorm import ActNormBase

__all__ = ["ActNorm", "BatchNorm"]


class ActNorm(ActNormBase, Bijector):
    r"""Activation normalisation: a per-channel affine map :math:`z = (x + b) \odot e^{s}`.

    ``s`` is stored divided by ``log_scale_factor`` (the official Glow code keeps ``logs / 3``,
    which triples the effective learning rate of the scale). :func:`flowkit.initialize` sets ``b``
    and ``s`` from a batch so that each channel of ``z`` has zero mean and unit variance over batch
    and spatial positions; until then the map is the identity. That needs at least two values per
    channel, and channels that vary: a single vector (or a single pixel per channel), or a constant
    channel, raises a ValueError rather than set a scale of ``1 / INIT_STD_EPS``. The parameters,
    their initialisation and the scale formula are those of :class:`flowkit.nn.ActNorm`, the same
    map as a network layer.

    :math:`\log|\det J| = (\prod \text{spatial sizes}) \sum_c s_c`. With ``spatial_shape`` the
    parameters are per channel and position (Flow++'s official ``Norm``), initialised from the
    batch alone, and :math:`\log|\det J|` is the sum of all :math:`s`.

    Args:
        channels: Number of channels ``C`` (the first event dimension).
        event_rank: 3 for images ``(C, H, W)``, 1 for vectors ``(C,)``.
        log_scale_factor: Multiplier between the stored and the applied log-scale.
        scale: Target standard deviation after initialisation.
        spatial_shape: Spatial sizes for parameters per position (e.g. ``(H, W)``), or None.

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

    def _event_pattern(self) -> tuple[int | None, ...]:
        if self.spatial_shape is not None:
            return (self.channels, *self.spatial_shape)
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def _log_abs_det(self, x: Tensor, log_scale: Tensor) -> Tensor:
        # Each parameter scales the positions it is shared by: all of them, or one.
        positions = math.prod(x.shape[x.dim() - self.event_rank + 1 :]) // math.prod(
            log_scale.shape[1:]
        )
        return (log_scale.sum() * positions).expand(x.shape[: x.dim() - self.event_rank])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scale and shift per channel; return ``(z, log_abs_det)``."""
        check_event_shape("ActNorm", x, self._event_pattern())
        z = self.normalize(x)
        return z, self._log_abs_det(x, self.applied_log_scale())

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Undo the per-channel shift and scale; return ``(x, log_abs_det)``."""
        check_event_shape("ActNorm", z, self._event_pattern(), "latent")
        log_scale = self.applied_log_scale()
        x = z * torch.exp(-log_scale) - self.bias
        return x, -self._log_abs_det(z, log_scale)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the channel count."""
        check_event_shape("ActNorm", shape, self._event_pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)


class BatchNorm(Bijector):
    r"""Batch normalisation as a bijector (RealNVP): standardise by batch statistics, then rescale.

    :math:`z = e^{\gamma} \odot (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta` per channel,
    with learned log-scale :math:`\gamma` and shift :math:`\beta` (both zero at the start), and

    .. math:: \log|\det J| = P \sum_c \left(\gamma_c - \tfrac12 \log(\sigma_c^2 + \epsilon)\right),

    where :math:`P` is the number of positions per channel (1 for vectors, :math:`H W` for
    images).

    * **Training mode** (``module.train()``): :math:`\mu, \sigma^2` are the mean and (biased)
      variance of the current batch over every dimension but the channel, and gradients flow
      through them, as in RealNVP and MAF. Each call also moves the running averages towards the
      batch statistics, :math:`m \leftarrow (1 - \text{momentum})\, m + \text{momentum} \cdot
      \mu` (the running variance averages the unbiased batch variance, as
      ``torch.nn.BatchNorm1d``). The map of one sample then depends on the rest of the batch, so
      batch elements are not independent, ``forward`` has a side effect (memory-saving invertible
      backpropagation, which re-runs ``forward``, must not be used), and ``inverse`` raises
      :class:`~flowkit.bijectors.InverseNotAvailable`: the statistics of the unknown ``x`` are not
      available. Call ``.eval()`` before sampling.
    * **Evaluation mode** (``module.eval()``): :math:`\mu, \sigma^2` are the running averages
      (0 and 1 at the start), and the layer is an ordinary per-channel affine bijector.

    Args:
        channels: Number of channels ``C`` (the first event dimension).
        event_rank: 1 for vectors ``(C,)``, 3 for images ``(C, H, W)``.
        momentum: Weight of the current batch in the running averages.
        eps: Added to the variance before the square root, keeping the scale finite.

    Shapes:
        ``x``: ``(*batch, C, *spatial)`` with ``event_rank - 1`` spatial dims; ``z`` the same;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), 3.7 and
        appendix E; Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density
        Estimation (2017), appendix B.

    Example:
        >>> norm = BatchNorm(3)
        >>> z, log_abs_det = norm(torch.randn(64, 3) * 5 + 2)
        >>> bool(z.std(0).sub(1).abs().max() < 0.05)
        True
        >>> x, _ = norm.eval().inverse(z)
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self,
        channels: int,
        *,
        event_rank: int = 1,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if channels < 1 or event_rank < 1:
            raise ValueError(
                f"BatchNorm expects channels >= 1 and event_rank >= 1, got {channels} and "
                f"{event_rank}"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm expects momentum in [0, 1], got {momentum}")
        if not eps > 0.0:
            raise ValueError(f"BatchNorm expects eps > 0, got {eps}")
        self.channels = int(channels)
        self.event_rank = int(event_rank)
        self.momentum = float(momentum)
        self.eps = float(eps)
        param_shape = (self.channels,) + (1,) * (self.event_rank - 1)
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.bias = nn.Parameter(torch.zeros(param_shape))
        self.register_buffer("running_mean", torch.zeros(param_shape))
        self.register_buffer("running_var", torch.ones(param_shape))

    def _event_pattern(self) -> tuple[int | None, ...]:
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def _batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        channel_dim = x.dim() - self.event_rank
        dims = [d for d in range(x.dim()) if d != channel_dim]
        mean = x.mean(dim=dims, keepdim=True)
        var = (x - mean).square().mean(dim=dims, keepdim=True)
        count = x.numel() // self.channels
        shape = self.running_mean.shape
        with torch.no_grad():
            unbiased = var * (count / (count - 1)) if count > 1 else var
            self.running_mean.lerp_(mean.reshape(shape).to(self.running_mean), self.momentum)
            self.running_var.lerp_(unbiased.reshape(shape).to(self.running_var), self.momentum)
        return mean.reshape(shape), var.reshape(shape)

    def _log_abs_det(self, x: Tensor, var: Tensor) -> Tensor:
        positions = math.prod(x.shape[x.dim() - self.event_rank + 1 :])
        per_channel = self.log_scale - 0.5 * torch.log(var + self.eps)
        return (per_channel.sum() * positions).expand(x.shape[: x.dim() - self.event_rank])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalise by batch (training) or running (evaluation) statistics; scale and shift."""
        check_event_shape("BatchNorm", x, self._event_pattern())
        if self.training:
            mean, var = self._batch_statistics(x)
        else:
            mean, var = self.running_mean, self.running_var
        z = (x - mean) * torch.rsqrt(var + self.eps) * self.log_scale.exp() + self.bias
        return z, self._log_abs_det(x, var)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Undo the normalisation with the running statistics (evaluation mode only)."""
        check_event_shape("BatchNorm", z, self._event_pattern(), "latent")
        if self.training:
            raise InverseNotAvailable(
                "BatchNorm in training mode normalises by the statistics of the input batch, "
                "which the inverse does not have; call .eval() on the model before sampling or "
                "inverting"
            )
        var = self.running_var
        x = (z - self.bias) * torch.exp(-self.log_scale) * torch.sqrt(var + self.eps)
        return x + self.running_mean, -self._log_abs_det(z, var)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the channel count."""
        check_event_shape("BatchNorm", shape, self._event_pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        """Channels, event rank, momentum and eps, for ``repr``."""
        return (
            f"{self.channels}, event_rank={self.event_rank}, momentum={self.momentum}, "
            f"eps={self.eps}"
        )
