"""Image features for a dequantizer's checkerboard couplings, computed at half width (Flow++)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = ["CheckerboardFeatures"]


class _Halves(Protocol):
    """What :class:`CheckerboardFeatures` needs of a split: the two halves of an image."""

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


class CheckerboardFeatures(nn.Module):
    """Features of an image for the dequantizer's checkerboard couplings, at half width.

    The two halves that a checkerboard split gathers (even and odd columns, or a checkerboard's
    two colours) are stacked along channels, ``(C, H, W) -> (2C, H, W / 2)``, and fed to a
    network (Flow++'s official code does the same before its dequantizer's "shallow processor"),
    so that the features line up with the half-width images the couplings' conditioners see.

    Args:
        split: A module whose ``split(x)`` returns the two half-width halves of ``x``, such as
            :class:`~flowkit.bijectors.CheckerboardSplit`; its buffers are saved with these
            features.
        network: Maps ``(B, 2C, H, W / 2)`` to the features ``(B, F, H, W / 2)``.

    Shapes:
        ``x``: ``(B, C, H, W)``; the features: ``(B, F, H, W / 2)``.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++ (2019); the official code,
        github.com/aravindsrinivas/flowpp.

    Example:
        >>> from flowkit.bijectors import CheckerboardSplit
        >>> features = CheckerboardFeatures(CheckerboardSplit(4, 4), nn.Conv2d(6, 8, 3, padding=1))
        >>> features(torch.rand(2, 3, 4, 4) - 0.5).shape
        torch.Size([2, 8, 4, 2])
    """

    def __init__(self, split: _Halves, network: nn.Module) -> None:
        super().__init__()
        if not isinstance(split, nn.Module) or not callable(getattr(split, "split", None)):
            raise TypeError(
                "CheckerboardFeatures expects split as an nn.Module with a split(x) method "
                f"(such as flowkit.bijectors.CheckerboardSplit), got {type(split).__name__}"
            )
        if not isinstance(network, nn.Module):
            raise TypeError(
                "CheckerboardFeatures expects network as an nn.Module, got "
                f"{type(network).__name__}"
            )
        self.split = split
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        """The features of the image ``x`` (``(B, C, H, W)``, values in ``[-1/2, 1/2)``)."""
        return self.network(torch.cat(self.split.split(x), dim=1))
