"""Glow's networks: the coupling conditioner, the split prior and the learned top prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._tensors import validation_enabled
from flowkit.nn.actnorm import ActNorm
from flowkit.nn.conv import EdgeConv2d, LinearZeros, ZeroConv2d

__all__ = ["GlowConditioner", "GlowTopPrior"]


class GlowConditioner(nn.Module):
    """Glow's coupling network: conv3x3, ActNorm, ReLU, conv1x1, ActNorm, ReLU, zero conv3x3.

    As the official code's ``f``: hidden convolutions have no bias (ActNorm follows) and start from
    N(0, 0.05^2) weights; 3x3 convolutions see Glow's edge channel (``edge_bias``); the output
    convolution is :class:`~flowkit.nn.ZeroConv2d`, so a new coupling is the identity (affine
    couplings then scale by sigmoid(2)).

    Args:
        in_channels: Channels of the kept half ``x_a``.
        out_channels: Channels produced (2 per transformed channel for affine couplings, 1 for
            additive).
        hidden_channels: Width of the hidden layers (512 in the paper).
        edge_bias: Use Glow's edge channel in the 3x3 convolutions.
        channels_last: Keep the network's weights and activations in channels-last (NHWC) memory
            layout, which oneDNN (and cuDNN with reduced precision) runs fastest; the input is
            converted on entry. Off gives plain NCHW.
        compute_dtype: Run the network under autocast in this dtype (e.g. ``torch.bfloat16``)
            and return its output in the input's dtype, so the flow itself, its log-determinants
            and priors stay in float32. Couplings stay exactly invertible: the inverse evaluates
            the same network on the same input.

    Example:
        >>> import flowkit
        >>> x = torch.randn(2, 6, 8, 8)
        >>> net = flowkit.initialize(GlowConditioner(6, 12, hidden_channels=32), x)
        >>> net(x).shape
        torch.Size([2, 12, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 512,
        *,
        edge_bias: bool = True,
        channels_last: bool = True,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.compute_dtype = compute_dtype
        self.channels_last = bool(channels_last)
        self.conv_in = EdgeConv2d(in_channels, hidden_channels, 3, edge_bias=edge_bias)
        self.norm_in: ActNorm | None = ActNorm(hidden_channels)
        self.conv_hidden = EdgeConv2d(hidden_channels, hidden_channels, 1)
        self.norm_hidden: ActNorm | None = ActNorm(hidden_channels)
        self.conv_out = ZeroConv2d(hidden_channels, out_channels, 3, edge_bias=edge_bias)
        if self.channels_last:
            # Module.to accepts memory_format at run time, but torch's overloads do not declare it.
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x_a`` to the coupling's parameters, in ``compute_dtype`` under autocast if set."""
        if self.compute_dtype is None:
            return self._network(x)
        with torch.autocast(device_type=x.device.type, dtype=self.compute_dtype):
            return self._network(x).to(x.dtype)

    def _network(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = _conv_actnorm(self.conv_in, self.norm_in, x)
        h = _conv_actnorm(self.conv_hidden, self.norm_hidden, F.relu(h, inplace=True))
        return self.conv_out(F.relu(h, inplace=True))


def _conv_actnorm(conv: EdgeConv2d, norm: ActNorm | None, x: Tensor) -> Tensor:
    """``norm(conv(x))`` with the ActNorm folded into the convolution's weight and bias.

    :math:`(Wx + b) e^{s} = (W e^{s}) x + b e^{s}`: the same function, but the scale and shift
    touch the weights instead of the activations, which saves passes over the widest tensors in
    both the forward and the backward pass. ``norm`` is None once folded for inference.
    """
    if norm is None:
        return conv(x)
    if norm.initializing:  # data-dependent initialisation needs the convolution's raw output
        return norm(conv(x))
    scale, shift = norm.folded_scale_and_shift()
    return conv(x, scale=scale, shift=shift)


class GlowTopPrior(nn.Module):
    """Parameters of Glow's learned top prior, optionally class-conditional, and its classifier.

    As the official ``prior``: with ``learn_top`` a zero-initialised 3x3 convolution (edge channel
    included) is applied to an all-zero input of shape ``(2C, H, W)``, which gives a learned bias
    per channel plus learned offsets at the border; with ``num_classes`` a zero-initialised linear
    map of the one-hot label is added to every position. The output, ``2C`` channels with mean and
    log-scale interleaved, parameterises :class:`flowkit.bijectors.Standardize`.

    ``class_logits(z_top)`` is the official auxiliary classifier: a zero-initialised linear map of
    the top latent averaged over space.

    Args:
        channels: Channels ``C`` of the top latent.
        spatial_shape: ``(H, W)`` of the top latent.
        num_classes: Number of classes for a class-conditional prior, or None.
        learn_top: Learn the prior's parameters (``learntop`` in the official code).
        edge_bias: Use Glow's edge channel in the convolution.
    """

    def __init__(
        self,
        channels: int,
        spatial_shape: Sequence[int],
        *,
        num_classes: int | None = None,
        learn_top: bool = True,
        edge_bias: bool = True,
    ) -> None:
        super().__init__()
        if not learn_top and num_classes is None:
            raise ValueError(
                "GlowTopPrior has nothing to learn with learn_top=False and no classes; "
                "leave the top latent under N(0, I) instead"
            )
        self.channels = int(channels)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.num_classes = num_classes
        self.conv = (
            ZeroConv2d(2 * channels, 2 * channels, 3, edge_bias=edge_bias) if learn_top else None
        )
        if num_classes is not None:
            self.class_embedding = LinearZeros(num_classes, 2 * channels)
            self.classifier = LinearZeros(channels, num_classes)

    def one_hot(self, context: Tensor | None) -> Tensor:
        """Integer labels ``(*batch,)`` as one-hot rows; float one-hot rows pass through."""
        num_classes = self.num_classes
        if num_classes is None:
            raise ValueError(
                "GlowTopPrior.one_hot expects a class-conditional prior, got num_classes=None"
            )
        if context is None:
            raise ValueError(
                f"GlowTopPrior is class-conditional ({num_classes} classes) and expects a "
                "context of class labels, shaped (batch,), got None"
            )
        if not context.is_floating_point():
            if validation_enabled() and bool(((context < 0) | (context >= num_classes)).any()):
                raise ValueError(
                    f"GlowTopPrior expects class labels in [0, {num_classes}), got values "
                    f"from {int(context.min())} to {int(context.max())}"
                )
            return F.one_hot(context.long(), num_classes).to(self.class_embedding.weight.dtype)
        if context.dim() >= 1 and context.shape[-1] == num_classes:
            return context.to(self.class_embedding.weight.dtype)
        raise ValueError(
            "GlowTopPrior expects integer class labels shaped (batch,) or float one-hot rows "
            f"shaped (batch, {num_classes}), got shape {tuple(context.shape)} and dtype "
            f"{context.dtype}"
        )

    def forward(self, context: Tensor | None = None) -> Tensor:
        """Mean and log-scale interleaved; ``(1, 2C, H, W)``, batched when class-conditional."""
        reference = self.class_embedding.weight if self.conv is None else self.conv.weight
        zeros = reference.new_zeros((1, 2 * self.channels) + self.spatial_shape)
        params = zeros if self.conv is None else self.conv(zeros)
        if self.num_classes is not None:
            params = params + self.class_embedding(self.one_hot(context))[..., None, None]
        return params

    def class_logits(self, z_top: Tensor) -> Tensor:
        """Class logits from the top latent ``(B, C, H, W)`` (before standardisation)."""
        if self.num_classes is None:
            raise RuntimeError("GlowTopPrior.class_logits needs a class-conditional prior")
        return self.classifier(z_top.mean(dim=(-2, -1)))
