"""Glow's convolution layers: the edge channel, zero-initialised outputs with a learned scale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from flowkit.nn import EdgeConv2d, LinearZeros, ZeroConv2d


def _full_weight(conv: EdgeConv2d) -> torch.Tensor:
    """The official ``(out, in + 1, k, k)`` weight: image channels, then the edge channel."""
    return torch.cat([conv.weight, conv.edge_weight], dim=1)


def _official_edge_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Glow's conv2d with edge_bias: zero-pad, append a channel of 1 in the padding, convolve."""
    pad = weight.shape[-1] // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    edge = F.pad(torch.zeros_like(x[:, :1]), (pad, pad, pad, pad), value=1.0)
    return F.conv2d(torch.cat([padded, edge], dim=1), weight, bias)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_edge_conv_matches_the_concatenated_edge_channel(kernel_size: int, bias: bool) -> None:
    conv = EdgeConv2d(3, 4, kernel_size, bias=bias, init_std=0.5).double()
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    assert _full_weight(conv).shape == (4, 4, kernel_size, kernel_size)
    assert_close(conv(x), _official_edge_conv(x, _full_weight(conv), conv.bias))
    # The edge term matters only at the border.
    inner = F.conv2d(x, conv.weight, conv.bias, padding=kernel_size // 2)
    pad = kernel_size // 2
    assert_close(conv(x)[..., pad:-pad, pad:-pad], inner[..., pad:-pad, pad:-pad])
    assert not torch.allclose(conv(x), inner)


def test_edge_conv_without_edge_and_one_by_one() -> None:
    plain = EdgeConv2d(3, 2, 3, edge_bias=False, init_std=1.0)
    x = torch.randn(2, 3, 4, 4)
    assert plain.weight.shape == (2, 3, 3, 3) and plain.edge_weight is None
    assert_close(plain(x), F.conv2d(x, plain.weight, padding=1))
    pointwise = EdgeConv2d(3, 2, 1, init_std=1.0)
    assert pointwise.weight.shape == (2, 3, 1, 1) and pointwise.edge_weight is None
    assert_close(pointwise(x), F.conv2d(x, pointwise.weight))
    with pytest.raises(ValueError, match="odd kernel_size, got 4"):
        EdgeConv2d(3, 2, 4)


def test_hidden_weights_start_small() -> None:
    torch.manual_seed(0)
    conv = EdgeConv2d(64, 64, 3)
    assert abs(float(_full_weight(conv).detach().std()) - 0.05) < 0.005


def test_zero_conv_starts_at_zero_and_scales_its_output() -> None:
    conv = ZeroConv2d(3, 4)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(conv(x), torch.zeros(2, 4, 5, 5))
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.normal_()
    expected = _official_edge_conv(x, _full_weight(conv), conv.bias) * torch.exp(
        3.0 * conv.log_scale
    )
    assert_close(conv(x), expected)


def test_zero_conv_folds_a_further_scale_and_shift() -> None:
    torch.manual_seed(0)
    conv = ZeroConv2d(3, 4).double()
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.normal_()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    scale = torch.randn(4, dtype=torch.float64)
    shift = torch.randn(4, dtype=torch.float64)
    expected = conv(x) * scale.view(-1, 1, 1) + shift.view(-1, 1, 1)
    assert_close(conv(x, scale=scale, shift=shift), expected)


def test_linear_zeros() -> None:
    layer = LinearZeros(3, 2)
    x = torch.randn(4, 3)
    assert torch.equal(layer(x), torch.zeros(4, 2))
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_()
    assert_close(layer(x), (x @ layer.weight.T + layer.bias) * torch.exp(3.0 * layer.log_scale))
