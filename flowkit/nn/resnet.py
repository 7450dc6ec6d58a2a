"""A small residual convolutional network with a zero-initialised output (RealNVP's conditioner)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = ["ResNetBlock", "ResNet"]


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, *, bias: bool, weight_norm: bool
) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    # He initialisation, as the official RealNVP code (stddev sqrt(2 / fan_in)).
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return _weight_norm(conv) if weight_norm else conv


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ResNetBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(norm(conv(relu(norm(x))))))``.

    Args:
        channels: Input and output channels.
        kernel_size: Odd kernel size of both convolutions.
        weight_norm: Weight-normalise the convolutions.
        batch_norm: Batch-normalise before each activation (then the convolutions have no bias).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        weight_norm: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm_in = _norm(channels, batch_norm)
        self.conv_in = _conv(
            channels, channels, kernel_size, bias=not batch_norm, weight_norm=weight_norm
        )
        self.norm_out = _norm(channels, batch_norm)
        self.conv_out = _conv(
            channels, channels, kernel_size, bias=not batch_norm, weight_norm=weight_norm
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` plus the residual branch (normalisation, ReLU, convolution, twice)."""
        h = self.conv_in(F.relu(self.norm_in(x)))
        return x + self.conv_out(F.relu(self.norm_out(h)))


class ResNet(nn.Module):
    r"""Residual convolutional network with a zero-initialised output (RealNVP's :math:`s, t` net).

    ``conv(k x k) -> blocks x ResNetBlock -> norm -> ReLU -> zero-initialised conv(1 x 1)``.
    The output convolution starts at zero weight and bias, so a coupling built on this network
    starts as the identity. Hidden convolutions use He initialisation and, by default, weight
    normalisation (:math:`w = g\, v / \|v\|` per output channel); batch normalisation, which
    RealNVP also uses, is optional because it makes the output of one sample depend on the rest
    of the batch in training mode.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (2 per transformed channel for affine couplings).
        hidden_channels: Width of the hidden layers.
        blocks: Number of residual blocks.
        kernel_size: Odd kernel size of the hidden convolutions.
        weight_norm: Weight-normalise the hidden convolutions.
        batch_norm: Batch-normalise inside the blocks and before the output.

    Shapes:
        ``x``: ``(B, in_channels, H, W)``; output ``(B, out_channels, H, W)``.

    References:
        He, Zhang, Ren & Sun, Identity Mappings in Deep Residual Networks (2016);
        Salimans & Kingma, Weight Normalization (2016);
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), section 4.1.

    Example:
        >>> import torch
        >>> net = ResNet(3, 6, hidden_channels=16, blocks=2)
        >>> net(torch.randn(2, 3, 8, 8)).abs().max().item()
        0.0
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden_channels: int = 64,
        blocks: int = 4,
        kernel_size: int = 3,
        weight_norm: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("hidden_channels", hidden_channels, 1),
            ("blocks", blocks, 0),
        ):
            if value < low:
                raise ValueError(f"ResNet expects {name} >= {low}, got {value}")
        if kernel_size % 2 != 1:
            raise ValueError(f"ResNet expects an odd kernel_size, got {kernel_size}")
        self.conv_in = _conv(
            in_channels, hidden_channels, kernel_size, bias=True, weight_norm=weight_norm
        )
        self.blocks = nn.ModuleList(
            ResNetBlock(
                hidden_channels,
                kernel_size=kernel_size,
                weight_norm=weight_norm,
                batch_norm=batch_norm,
            )
            for _ in range(blocks)
        )
        self.norm_out = _norm(hidden_channels, batch_norm)
        self.conv_out = nn.Conv2d(hidden_channels, out_channels, 1)
        nn.init.zeros_(self.conv_out.weight)
        assert self.conv_out.bias is not None
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Input convolution, residual blocks, then normalisation, ReLU and output convolution."""
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        return self.conv_out(F.relu(self.norm_out(h)))
