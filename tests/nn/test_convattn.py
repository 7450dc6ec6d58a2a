"""Flow++'s networks: conv-attn (shapes, zero start, attention reach, context, dropout, errors)
and the dequantizer's gated convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowkit.nn import ConvAttn, GatedConvNet


def _with_random_output(net: ConvAttn, seed: int = 0) -> ConvAttn:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.output.weight.copy_(torch.randn(net.output.weight.shape, generator=generator))
    return net


def test_shapes_and_zero_start() -> None:
    torch.manual_seed(0)
    net = ConvAttn(3, 10, filters=8, blocks=2, heads=2, context_channels=4, spatial_shape=(6, 4))
    out = net(torch.randn(5, 3, 6, 4), torch.randn(5, 4, 6, 4))
    assert out.shape == (5, 10, 6, 4)
    assert torch.equal(out, torch.zeros_like(out))
    # The output layer starts at zero but learns: its gradient is not zero.
    (net(torch.randn(5, 3, 6, 4), torch.randn(5, 4, 6, 4)) - 1).square().sum().backward()
    weight = net.output.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_without_zero_init_the_output_is_not_zero() -> None:
    torch.manual_seed(0)
    net = ConvAttn(2, 3, filters=8, blocks=1, heads=2, zero_init=False)
    assert net(torch.randn(2, 2, 5, 5)).abs().max() > 0


@pytest.mark.parametrize("heads", [0, 2])
def test_attention_reaches_far_positions(heads: int) -> None:
    # Three 3x3 convolutions see 3 pixels away; the pixel changed is 10 away from the one read.
    torch.manual_seed(0)
    net = _with_random_output(
        ConvAttn(1, 1, filters=8, blocks=1, heads=heads, spatial_shape=(12, 12) if heads else None)
    ).eval()
    x = torch.randn(1, 1, 12, 12)
    moved = x.clone()
    moved[0, 0, 11, 11] += 3.0
    with torch.no_grad():
        change = (net(moved) - net(x))[0, 0, 0, 0].abs().item()
    if heads:
        assert change > 1e-4
    else:
        assert change == 0.0


def test_context_is_used() -> None:
    torch.manual_seed(0)
    net = _with_random_output(ConvAttn(2, 3, filters=8, blocks=1, heads=2, context_channels=3))
    x, context = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert (net(x, context) - net(x, context + 1.0)).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["blocks", "input"])
def test_context_enters_where_the_mode_says(mode: str) -> None:
    torch.manual_seed(0)
    net = ConvAttn(2, 3, filters=4, blocks=2, heads=2, context_channels=3, context_mode=mode)
    # The official code projects the context into each block's gated convolution (``a_proj``, a
    # 1x1 convolution of concat_elu(context)); "input" concatenates it to the input instead.
    projections = [block.context_proj for block in net.blocks]
    if mode == "blocks":
        assert net.input.in_channels == 2
        assert all(p is not None and tuple(p.weight.shape) == (4, 6, 1, 1) for p in projections)
    else:
        assert net.input.in_channels == 5 and all(p is None for p in projections)


def test_context_projection_adds_to_the_first_convolution_of_each_block() -> None:
    torch.manual_seed(0)
    net = ConvAttn(2, 3, filters=4, blocks=1, heads=0, context_channels=3).eval()
    block = net.blocks[0]
    h, context = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)

    def concat_elu(x: torch.Tensor) -> torch.Tensor:
        return F.elu(torch.cat([x, -x], 1))

    c1 = block.conv(concat_elu(h)) + block.context_proj(concat_elu(context))
    a, b = block.conv_gate(concat_elu(c1)).chunk(2, 1)
    expected = block.conv_norm(h + a * torch.sigmoid(b))
    with torch.no_grad():
        torch.testing.assert_close(block(h, None, context), expected)


def test_gated_conv_net_shapes_and_residual_blocks() -> None:
    torch.manual_seed(0)
    net = GatedConvNet(6, 8, blocks=2).eval()
    x = torch.randn(3, 6, 5, 4)
    assert net(x).shape == (3, 8, 5, 4)
    without_blocks = GatedConvNet(6, 8, blocks=0)
    without_blocks.input.load_state_dict(net.input.state_dict())
    with torch.no_grad():
        # The gates start away from zero: each block changes its input.
        assert (net(x) - without_blocks(x)).abs().max() > 1e-3
        nn.init.zeros_(net.blocks[0].conv_gate.weight)
        nn.init.zeros_(net.blocks[1].conv_gate.weight)
        nn.init.zeros_(net.blocks[0].conv_gate.bias)
        nn.init.zeros_(net.blocks[1].conv_gate.bias)
        # A zero gate input: glu gives 0 * sigmoid(0), and the blocks are the identity.
        torch.testing.assert_close(net(x), without_blocks(x))
    with pytest.raises(ValueError, match=r"input of shape \(B, 6, H, W\)"):
        net(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="blocks as an int >= 0"):
        GatedConvNet(6, 8, blocks=-1)


def test_position_embedding_tells_positions_apart() -> None:
    # A constant image: without a position embedding, attention sees identical tokens, and only
    # the zero padding separates the border from the interior.
    torch.manual_seed(0)
    net = _with_random_output(ConvAttn(1, 1, filters=8, blocks=1, heads=2, spatial_shape=(9, 9)))
    with torch.no_grad():
        out = net(torch.ones(1, 1, 9, 9))[0, 0]
        nn.init.zeros_(net.position)
        flat = net(torch.ones(1, 1, 9, 9))[0, 0]
    # Two interior pixels, out of the padding's reach: equal only without the embedding.
    assert torch.allclose(flat[4, 4], flat[4, 5])
    assert not torch.allclose(out[4, 4], out[4, 5])


def test_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    net = _with_random_output(ConvAttn(2, 2, filters=8, blocks=2, heads=2, dropout=0.5))
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(net.train()(x), net.train()(x))
        assert torch.equal(net.eval()(x), net.eval()(x))


def test_float64_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    net = _with_random_output(ConvAttn(1, 2, filters=4, blocks=1, heads=2, context_channels=1))
    net = net.double()
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    context = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x, context))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(filters=6, heads=4), "heads to divide filters"),
        (dict(blocks=-1), "blocks as an int >= 0"),
        (dict(dropout=1.0), "dropout in"),
        (dict(spatial_shape=(4,)), "spatial_shape as"),
        (dict(context_mode="concat"), "context_mode in"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvAttn(1, 1, **kwargs)


def test_bad_inputs() -> None:
    net = ConvAttn(2, 2, filters=4, blocks=1, heads=2, context_channels=1, spatial_shape=(4, 4))
    x, context = torch.randn(1, 2, 4, 4), torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"input of shape \(B, 2, H, W\)"):
        net(torch.randn(1, 3, 4, 4), context)
    with pytest.raises(ValueError, match="position embedding"):
        net(torch.randn(1, 2, 4, 6), torch.randn(1, 1, 4, 6))
    with pytest.raises(ValueError, match="expects a context"):
        net(x)
    with pytest.raises(ValueError, match=r"context of shape \(1, 1, 4, 4\)"):
        net(x, torch.randn(1, 2, 4, 4))
    plain = ConvAttn(2, 2, filters=4, blocks=1, heads=2)
    with pytest.raises(ValueError, match="expects no context"):
        plain(x, context)
