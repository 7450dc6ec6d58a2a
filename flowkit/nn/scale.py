"""ScaledTanh: RealNVP's bounded log-scale for affine couplings, with a learned range."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ScaledTanh"]


class ScaledTanh(nn.Module):
    r"""Bounded log-scale :math:`\log s = a \odot \tanh(h)` of a coupling's raw scale :math:`h`.

    Pass it as ``scale_fn`` of :class:`~flowkit.bijectors.AffineCoupling`. The tanh bounds the
    log-scale to :math:`(-|a|, |a|)`, so a network that outputs a large value early in training
    cannot blow the activations up, and the learned per-channel range :math:`a` (1 at the start)
    lets the coupling widen it where the data need it. With a zero-initialised network the
    coupling starts as the identity (:math:`\tanh 0 = 0`) and, because :math:`a \ne 0`, the
    gradient still reaches the network. Because it is a module, its parameter :math:`a` is
    registered in the coupling that uses it.

    Args:
        channels: Number of channels of :math:`h` (the transformed channels in split mode, all
            channels in mask mode).
        event_rank: Rank of the event :math:`h` belongs to: 3 for images (``a`` has shape
            ``(C, 1, 1)``), 1 for vectors (``(C,)``).
        init: Initial value of :math:`a`.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), section 4.1 and
        the official implementation's ``rescaling_scale``.

    Example:
        >>> from flowkit.bijectors import AffineCoupling, channel_mask
        >>> from flowkit.nn import MLP
        >>> coupling = AffineCoupling(MLP(2, 4), channel_mask(4, event_rank=1),
        ...                           scale_fn=ScaledTanh(2, event_rank=1))
        >>> z, log_abs_det = coupling(torch.randn(8, 4))
    """

    def __init__(self, channels: int, *, event_rank: int = 3, init: float = 1.0) -> None:
        super().__init__()
        if channels < 1 or event_rank < 1:
            raise ValueError(
                f"ScaledTanh expects channels >= 1 and event_rank >= 1, got {channels} and "
                f"{event_rank}"
            )
        self.channels = int(channels)
        self.event_rank = int(event_rank)
        shape = (self.channels,) + (1,) * (self.event_rank - 1)
        self.scale = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, h: Tensor) -> Tensor:
        r"""Return :math:`s \tanh(h)`."""
        return self.scale * torch.tanh(h)

    def extra_repr(self) -> str:
        """Channels and event rank, for ``repr``."""
        return f"{self.channels}, event_rank={self.event_rank}"
