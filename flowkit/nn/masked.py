"""MaskedInput: hand a coupling network its mask as an extra input channel."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaskedInput"]


class MaskedInput(nn.Module):
    """Append a constant spatial mask as an extra input channel of a conditioner.

    A mask-mode coupling hands its network ``x * mask``, in which a masked-out pixel and a pixel
    of value 0 look the same; RealNVP's networks also receive the mask itself, so they know which
    pixels they may use.

    Args:
        network: The network, taking ``C + 1`` channels.
        mask: Mask of shape ``(1, H, W)`` (as :func:`flowkit.bijectors.checkerboard_mask`
            returns) or ``(H, W)``.

    Shapes:
        ``x``: ``(*batch, C, H, W)``; the network receives ``(*batch, C + 1, H, W)``.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017); the official
        implementation's masked convolutional couplings.

    Example:
        >>> from flowkit.bijectors import checkerboard_mask
        >>> net = MaskedInput(nn.Conv2d(3, 4, 3, padding=1), checkerboard_mask(8, 8))
        >>> net(torch.randn(2, 2, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    mask: Tensor

    def __init__(self, network: nn.Module, mask: Tensor) -> None:
        super().__init__()
        if mask.dim() not in (2, 3) or (mask.dim() == 3 and mask.shape[0] != 1):
            raise ValueError(
                f"MaskedInput expects a mask of shape (1, H, W) or (H, W), got {tuple(mask.shape)}"
            )
        self.network = network
        spatial = tuple(mask.shape[-2:])
        self.register_buffer("mask", mask.to(torch.get_default_dtype()).reshape((1, 1) + spatial))

    def forward(self, x: Tensor) -> Tensor:
        """Append the mask as a channel and apply the network."""
        mask = self.mask.to(x.dtype).expand(x.shape[:-3] + (1,) + x.shape[-2:])
        return self.network(torch.cat([x, mask], dim=-3))
