"""Glow's convolution layers: edge-aware 3x3 convolutions and zero-initialised outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EdgeConv2d", "LinearZeros", "ZeroConv2d"]

# Glow's official initial weight scale for hidden convolutions (ActNorm follows, so only the
# direction matters much).
HIDDEN_INIT_STD = 0.05


def _edge_map(height: int, width: int, padding: int, reference: Tensor) -> Tensor:
    """A (1, 1, H + 2p, W + 2p) map that is 1 in the zero padding and 0 inside."""
    inside = reference.new_zeros((1, 1, height, width))
    return F.pad(inside, (padding, padding, padding, padding), value=1.0)


class EdgeConv2d(nn.Module):
    """Same-size convolution that tells the filter where the image edge is (Glow's ``edge_bias``).

    Glow's official code zero-pads the input and appends a constant channel that is 1 in the padding
    and 0 inside, so the filter can tell a border pixel from a dark one. That extra channel does not
    depend on the data, so its contribution is a fixed bias map: this layer computes
    ``conv(pad(x), W_x) + conv(edge, W_edge)`` without materialising the concatenated input. The
    weight keeps the official ``(out, in + 1, k, k)`` shape (the last input channel is the edge
    channel). A 1x1 kernel has no padding and no edge channel. The weights of the image channels
    and of the edge channel are stored as two parameters (``weight`` and ``edge_weight``), which
    together have the official ``(out, in + 1, k, k)`` size; separate contiguous tensors keep the
    convolution on oneDNN's fast path.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size.
        edge_bias: Append the edge channel (True in Glow); False gives a plain padded convolution.
        bias: Add a learned bias per output channel.
        init_std: Standard deviation of the normal initial weights; 0 for zeros.
    """

    weight: Tensor
    edge_weight: Tensor | None
    bias: Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        edge_bias: bool = True,
        bias: bool = False,
        init_std: float = HIDDEN_INIT_STD,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"EdgeConv2d expects an odd kernel_size, got {kernel_size}")
        self.in_channels = int(in_channels)
        self.kernel_size = int(kernel_size)
        self.padding = kernel_size // 2
        self.edge_bias = bool(edge_bias) and kernel_size > 1
        weight = torch.randn(out_channels, in_channels + 1, kernel_size, kernel_size) * init_std
        self.weight = nn.Parameter(weight[:, :in_channels].contiguous())
        self.edge_weight = (
            nn.Parameter(weight[:, in_channels:].contiguous()) if self.edge_bias else None
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(
        self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None
    ) -> Tensor:
        """Convolve ``x``, optionally scaled and shifted per output channel in weight space.

        With ``scale`` and ``shift`` this returns ``scale * conv(x) + shift`` without a pass over
        the output. That is how a following ActNorm or output scale costs nothing on the
        activations: the scale multiplies the (small) weight and the shift becomes the bias.
        """
        weight, edge_weight, bias = self.weight, self.edge_weight, self.bias
        if scale is not None:
            weight = weight * scale.view(-1, 1, 1, 1)
            edge_weight = None if edge_weight is None else edge_weight * scale.view(-1, 1, 1, 1)
            bias = None if bias is None else bias * scale
        if shift is not None:
            bias = shift if bias is None else bias + shift
        if edge_weight is None:
            return F.conv2d(x, weight, bias, padding=self.padding)
        edge = _edge_map(x.shape[-2], x.shape[-1], self.padding, x)
        if x.shape[-3] < weight.shape[0]:
            # Few input channels: append the edge channel to the padded input, as the official code
            # does; copying the small input costs less than a pass over the wide output.
            padded = F.pad(x, (self.padding,) * 4)
            inputs = torch.cat([padded, edge.expand(x.shape[0], 1, -1, -1)], dim=1)
            if x.is_contiguous(memory_format=torch.channels_last):
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            return F.conv2d(inputs, torch.cat([weight, edge_weight], dim=1), bias)
        # Few output channels: add the edge's contribution, a fixed map, to the output.
        return F.conv2d(x, weight, bias, padding=self.padding) + F.conv2d(edge, edge_weight)


class ZeroConv2d(EdgeConv2d):
    r"""Zero-initialised output convolution with a learned per-channel output scale.

    :math:`y = (\mathrm{conv}(x) + b) \odot e^{3 s}`, with weight, :math:`b` and :math:`s` all zero
    at the start, so the network it ends outputs zeros (couplings start as the identity, priors as
    :math:`N(0, I)`). The factor 3 (``log_scale_factor``) is the official code's.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size (3 in Glow).
        edge_bias: Append Glow's edge channel (see :class:`EdgeConv2d`).
        log_scale_factor: Multiplier of the stored log-scale.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        edge_bias: bool = True,
        log_scale_factor: float = 3.0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, edge_bias=edge_bias, bias=True, init_std=0.0
        )
        self.log_scale_factor = float(log_scale_factor)
        self.log_scale = nn.Parameter(torch.zeros(out_channels, 1, 1))

    def forward(
        self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None
    ) -> Tensor:
        """Return :math:`y`; ``scale`` and ``shift`` map it further as :class:`EdgeConv2d` does."""
        output_scale = torch.exp(self.log_scale * self.log_scale_factor).flatten()
        if scale is not None:
            output_scale = output_scale * scale
        return super().forward(x, scale=output_scale, shift=shift)


class LinearZeros(nn.Module):
    r"""Zero-initialised linear layer with a learned output scale.

    :math:`y = (W x + b) \odot e^{3 s}`. Glow's official ``linear_zeros``, used for the class
    embedding of the top prior and the classifier head.

    Args:
        in_features: Input features.
        out_features: Output features.
        log_scale_factor: Multiplier of the stored log-scale.
    """

    def __init__(
        self, in_features: int, out_features: int, *, log_scale_factor: float = 3.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.log_scale = nn.Parameter(torch.zeros(out_features))
        self.log_scale_factor = float(log_scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        r"""Return :math:`(W x + b) \odot e^{3 s}`."""
        return F.linear(x, self.weight, self.bias) * torch.exp(
            self.log_scale * self.log_scale_factor
        )
