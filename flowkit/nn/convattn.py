"""Flow++'s networks: gated residual convolutions, with multi-head self-attention (conv-attn)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONTEXT_MODES", "ConvAttn", "ConvAttnBlock", "GatedConv", "GatedConvNet"]

# Flow++'s official code initialises the position embeddings with this standard deviation.
POSITION_INIT_STD = 0.01
# Added to the channel variance in the layer norms (the official code's value).
LAYER_NORM_EPS = 1e-5
# Where a ConvAttn takes its context: projected into every block's gated convolution (the
# official code's ``a_proj``), or concatenated to the network's input.
CONTEXT_MODES = ("blocks", "input")


def _concat_elu(x: Tensor) -> Tensor:
    """``elu([x, -x])`` along channels: keeps both signs' information (PixelCNN++, Flow++)."""
    return F.elu(torch.cat([x, -x], dim=1))


def _gate(x: Tensor) -> Tensor:
    """Gated linear unit over channels: ``a * sigmoid(b)`` for the two halves ``a, b``."""
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class _ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of each position of a ``(B, C, H, W)`` tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        variance = (x - mean).square().mean(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(variance + LAYER_NORM_EPS) * self.weight + self.bias


class ConvAttnBlock(nn.Module):
    r"""One block of Flow++'s conditioner: a gated residual convolution, then gated self-attention.

    With :math:`\mathrm{ce}(h) = \mathrm{elu}([h, -h])` (concatenated ELU) and the gated linear
    unit :math:`\mathrm{glu}([a, b]) = a \odot \sigma(b)`:

    1. :math:`h \leftarrow \mathrm{LN}(h + \mathrm{glu}(W_2 \,\mathrm{drop}(\mathrm{ce}(
       W_1 * \mathrm{ce}(h) + V \mathrm{ce}(a)))))` with :math:`W_1` a 3x3 and :math:`W_2`,
       :math:`V` 1x1 convolutions, :math:`a` the context (:math:`V` only with
       ``context_channels``);
    2. :math:`h \leftarrow \mathrm{LN}(h + \mathrm{glu}(W_4\, \mathrm{drop}(\mathrm{MHA}(
       W_3 (h + e)))))`: multi-head self-attention over the :math:`H W` positions, with
       queries, keys and values from the 1x1 convolution :math:`W_3` of :math:`h` plus the
       position embedding :math:`e` (when given), and :math:`W_4` a 1x1 convolution.

    LN normalises each position over its channels.

    Args:
        channels: Width ``F`` of the block (input and output channels).
        heads: Attention heads; must divide ``channels``. 0 leaves out the attention half.
        dropout: Dropout probability after each nonlinearity (active in training mode only).
        context_channels: Channels of the context :math:`a`; 0 for a block without context.

    Shapes:
        ``h``: ``(B, F, H, W)``; ``position``: ``(F, H, W)`` or None; ``context``:
        ``(B, context_channels, H, W)`` or None; output ``(B, F, H, W)``.
    """

    def __init__(
        self, channels: int, *, heads: int = 4, dropout: float = 0.0, context_channels: int = 0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.context_proj = (
            nn.Conv2d(2 * context_channels, channels, 1) if context_channels else None
        )
        self.conv_gate = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.conv_norm = _ChannelLayerNorm(channels)
        if heads:
            self.qkv = nn.Conv2d(channels, 3 * channels, 1)
            self.attn_gate = nn.Conv2d(channels, 2 * channels, 1)
            self.attn_norm = _ChannelLayerNorm(channels)

    def forward(
        self, h: Tensor, position: Tensor | None = None, context: Tensor | None = None
    ) -> Tensor:
        """Gated convolution then (with heads) gated attention, each residual and normalised."""
        c = self.conv(_concat_elu(h))
        if self.context_proj is not None and context is not None:
            c = c + self.context_proj(_concat_elu(context))
        c = self.dropout(_concat_elu(c))
        h = self.conv_norm(h + _gate(self.conv_gate(c)))
        if not self.heads:
            return h
        batch, channels, height, width = h.shape
        qkv = self.qkv(h if position is None else h + position)
        # (B, 3F, H, W) -> three (B, heads, HW, F / heads) tensors.
        qkv = qkv.reshape(batch, 3, self.heads, channels // self.heads, height * width)
        # Contiguous heads: the CPU kernels run about three times faster than on strided views.
        query, key, value = qkv.transpose(-1, -2).contiguous().unbind(1)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(-1, -2).reshape(batch, channels, height, width)
        return self.attn_norm(h + _gate(self.attn_gate(self.dropout(attended))))


class ConvAttn(nn.Module):
    r"""Flow++'s "conv-attn" coupling network: gated convolutions with self-attention.

    ``3x3 conv -> blocks x ConvAttnBlock -> 3x3 conv``. Each :class:`ConvAttnBlock` is a gated
    residual convolution and a gated multi-head self-attention over all :math:`H W` positions,
    each followed by a layer norm over channels, with optional dropout. A context of the same
    height and width (features of the conditioning image, say) is projected into every block's
    gated convolution (``context_mode="blocks"``, as Flow++'s official code does) or
    concatenated to the input's channels (``"input"``). The last convolution starts at zero
    (``zero_init``), so a coupling built on this
    network starts from the map its all-zero parameters give (the identity for Flow++'s map).

    Given ``spatial_shape``, a learned position embedding of shape ``(filters, H, W)`` (shared by
    the blocks, as in the official code) is added to the attention's input; without it the
    network takes any height and width, and positions are told apart only through the
    convolutions' zero padding.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (``P * C_b`` for a coupling whose map has ``P`` parameters).
        filters: Width ``F`` of the blocks (96 in Flow++'s CIFAR-10 model).
        blocks: Number of blocks (10 for CIFAR-10).
        heads: Attention heads (4 in Flow++); must divide ``filters``. 0 gives a gated residual
            convolution network without attention.
        dropout: Dropout probability inside the blocks (0.2 for CIFAR-10).
        context_channels: Channels of the context; 0 for a network without context.
        context_mode: ``"blocks"`` or ``"input"``, where the context enters (see above).
        spatial_shape: ``(H, W)`` for a learned position embedding, or None.
        zero_init: Start the output convolution at zero (False keeps torch's default
            initialisation, for a network whose output feeds other networks).

    Shapes:
        ``x``: ``(B, in_channels, H, W)``; ``context``: ``(B, context_channels, H, W)``; output
        ``(B, out_channels, H, W)``.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++: Improving Flow-Based Generative Models with
        Variational Dequantization and Architecture Design (2019), section 3.3;
        Vaswani et al., Attention Is All You Need (2017).

    Example:
        >>> net = ConvAttn(3, 8, filters=16, blocks=2, heads=4, context_channels=2)
        >>> out = net(torch.randn(5, 3, 8, 4), torch.randn(5, 2, 8, 4))
        >>> out.shape, out.abs().max().item()
        (torch.Size([5, 8, 8, 4]), 0.0)
    """

    position: Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        filters: int = 96,
        blocks: int = 10,
        heads: int = 4,
        dropout: float = 0.0,
        context_channels: int = 0,
        context_mode: str = "blocks",
        spatial_shape: Sequence[int] | None = None,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("filters", filters, 1),
            ("blocks", blocks, 0),
            ("heads", heads, 0),
            ("context_channels", context_channels, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ConvAttn expects {name} as an int >= {low}, got {value!r}")
        if heads and filters % heads:
            raise ValueError(
                f"ConvAttn expects heads to divide filters, got heads={heads}, filters={filters}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ConvAttn expects dropout in [0, 1), got {dropout!r}")
        if context_mode not in CONTEXT_MODES:
            raise ValueError(
                f"ConvAttn expects context_mode in {CONTEXT_MODES}, got {context_mode!r}"
            )
        self.in_channels = in_channels
        self.context_channels = context_channels
        self.context_mode = context_mode
        into_input = context_channels if context_mode == "input" else 0
        into_blocks = context_channels if context_mode == "blocks" else 0
        self.input = nn.Conv2d(in_channels + into_input, filters, 3, padding=1)
        self.blocks = nn.ModuleList(
            ConvAttnBlock(filters, heads=heads, dropout=dropout, context_channels=into_blocks)
            for _ in range(blocks)
        )
        self.output = nn.Conv2d(filters, out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.output.weight)
            assert self.output.bias is not None
            nn.init.zeros_(self.output.bias)
        self.spatial_shape: tuple[int, int] | None = None
        if spatial_shape is None or not heads:
            self.register_parameter("position", None)
        else:
            shape = tuple(int(size) for size in spatial_shape)
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(
                    f"ConvAttn expects spatial_shape as (H, W) with positive sizes, "
                    f"got {tuple(spatial_shape)}"
                )
            self.spatial_shape = (shape[0], shape[1])
            self.position = nn.Parameter(torch.randn(filters, *shape) * POSITION_INIT_STD)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The network's output for ``x``, with ``context`` concatenated to its channels."""
        self._check(x, context)
        if context is not None:
            context = context.to(x.dtype)
            if self.context_mode == "input":
                x, context = torch.cat([x, context], dim=1), None
        h = self.input(x)
        for block in self.blocks:
            h = block(h, self.position, context)
        return self.output(h)

    def _check(self, x: Tensor, context: Tensor | None) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConvAttn expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if self.spatial_shape is not None and tuple(x.shape[2:]) != self.spatial_shape:
            raise ValueError(
                f"ConvAttn expects images of size {self.spatial_shape} (its position "
                f"embedding's), got {tuple(x.shape[2:])}"
            )
        if (context is None) != (self.context_channels == 0):
            raise ValueError(
                f"ConvAttn built with context_channels={self.context_channels} expects "
                f"{'a context' if context is None else 'no context'}, got "
                f"{'none' if context is None else tuple(context.shape)}"
            )
        if context is not None:
            expected = (x.shape[0], self.context_channels, *x.shape[2:])
            if tuple(context.shape) != expected:
                raise ValueError(
                    f"ConvAttn expects a context of shape {expected}, got {tuple(context.shape)}"
                )

    def extra_repr(self) -> str:
        """Context channels and mode, and position embedding size, for ``repr``."""
        return (
            f"context_channels={self.context_channels}, context_mode={self.context_mode!r}, "
            f"spatial_shape={self.spatial_shape}"
        )


class GatedConv(nn.Module):
    r"""A gated residual convolution, Flow++'s ``gated_conv`` without a context.

    :math:`h + \mathrm{glu}(W_2 * \mathrm{drop}(\mathrm{ce}(W_1 * \mathrm{ce}(h))))`, where
    :math:`\mathrm{ce}` is the concatenated ELU and :math:`\mathrm{glu}([a, b]) = a \odot
    \sigma(b)`, as in :class:`ConvAttnBlock`; :math:`W_1` is a 3x3 convolution and :math:`W_2` a
    ``kernel_size`` one. Without a normalisation, this is the block of Flow++'s dequantizer
    feature network (the official ``gated_conv`` with ``use_nin=False``: both convolutions 3x3).

    Args:
        channels: Width ``F`` (input and output channels).
        kernel_size: Size of :math:`W_2` (3 in the feature network, 1 in :class:`ConvAttnBlock`).
        dropout: Dropout probability after the inner nonlinearity (training mode only).

    Shapes:
        ``h``: ``(B, F, H, W)``; output the same.
    """

    def __init__(self, channels: int, *, kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.conv_gate = nn.Conv2d(
            2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        """The block's output: ``h`` plus the gated residual."""
        c = self.dropout(_concat_elu(self.conv(_concat_elu(h))))
        return h + _gate(self.conv_gate(c))


class GatedConvNet(nn.Module):
    r"""Flow++'s dequantizer feature network: a 3x3 convolution, then ``blocks`` :class:`GatedConv`.

    The official code's "shallow processor" (``run_cifar.py``): a 3x3 projection to ``filters``
    channels and three gated residual 3x3 convolutions, without attention or normalisation. Its
    output (``filters`` channels) conditions every coupling of the dequantizer.

    Args:
        in_channels: Input channels.
        filters: Width ``F`` and output channels (32 in Flow++).
        blocks: Gated convolutions (3 in Flow++).
        dropout: Dropout inside the blocks (training mode only).

    Shapes:
        ``x``: ``(B, in_channels, H, W)``; output ``(B, filters, H, W)``.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++ (2019), section 3.1 and the official code.

    Example:
        >>> GatedConvNet(6, 32, blocks=3)(torch.randn(2, 6, 8, 4)).shape
        torch.Size([2, 32, 8, 4])
    """

    def __init__(
        self, in_channels: int, filters: int = 32, *, blocks: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("filters", filters, 1),
            ("blocks", blocks, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"GatedConvNet expects {name} as an int >= {low}, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GatedConvNet expects dropout in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.input = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.blocks = nn.Sequential(*(GatedConv(filters, dropout=dropout) for _ in range(blocks)))

    def forward(self, x: Tensor) -> Tensor:
        """The features of ``x``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConvNet expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return self.blocks(self.input(x))
