"""Tests of the ResNet conditioner."""

from __future__ import annotations

import pytest
import torch

from flowkit.nn import ResNet


def _resnet_parameters(c_in, c_out, hidden, blocks, *, weight_norm, batch_norm, k=3):
    """Parameter count of ResNet written out from its documented layout."""
    gain = hidden if weight_norm else 0
    conv_in = c_in * hidden * k * k + hidden + gain
    block_conv = hidden * hidden * k * k + (0 if batch_norm else hidden) + gain
    block_norms = 2 * (2 * hidden) if batch_norm else 0
    norm_out = 2 * hidden if batch_norm else 0
    conv_out = hidden * c_out + c_out
    return conv_in + blocks * (2 * block_conv + block_norms) + norm_out + conv_out


@pytest.mark.parametrize("weight_norm", [True, False])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_parameter_count_and_zero_output(weight_norm, batch_norm):
    net = ResNet(3, 4, hidden_channels=5, blocks=2, weight_norm=weight_norm, batch_norm=batch_norm)
    count = sum(p.numel() for p in net.parameters())
    assert count == _resnet_parameters(3, 4, 5, 2, weight_norm=weight_norm, batch_norm=batch_norm)
    out = net(torch.randn(2, 3, 6, 7))
    assert out.shape == (2, 4, 6, 7)
    assert torch.equal(out, torch.zeros_like(out))


def test_receptive_field_of_three_convolutions():
    net = ResNet(2, 2, hidden_channels=4, blocks=1)
    with torch.no_grad():
        net.conv_out.weight.normal_()
    x = torch.randn(1, 2, 9, 9)
    changed = x.clone()
    changed[0, 0, 4, 4] += 1.0
    difference = (net(x) - net(changed)).abs()[0].sum(0)
    # Three 3x3 convolutions (input, two in the block) and a 1x1 output reach 3 pixels away.
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    near = torch.maximum((rows - 4).abs(), (cols - 4).abs()) <= 3
    assert difference[4, 4] > 0 and difference[near].sum() > difference[4, 4]
    assert torch.equal(difference[~near], torch.zeros(int((~near).sum())))


def test_weight_norm_output_is_invariant_to_the_direction_scale():
    net = ResNet(2, 3, hidden_channels=4, blocks=1)
    with torch.no_grad():
        net.conv_out.weight.normal_()
        x = torch.randn(2, 2, 4, 4)
        before = net(x)
        net.conv_in.parametrizations.weight.original1.mul_(3.0)
        torch.testing.assert_close(net(x), before)


def test_batch_norm_eval_mode_is_batch_independent():
    net = ResNet(2, 2, hidden_channels=4, blocks=1, batch_norm=True)
    with torch.no_grad():
        net.conv_out.weight.normal_()
        for _ in range(3):
            net(torch.randn(8, 2, 4, 4) * 2 + 1)
    net.eval()
    x = torch.randn(4, 2, 4, 4)
    torch.testing.assert_close(net(x)[:1], net(x[:1]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "out_channels": 2},
        {"in_channels": 2, "out_channels": 2, "blocks": -1},
        {"in_channels": 2, "out_channels": 2, "kernel_size": 2},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="ResNet expects"):
        ResNet(**kwargs)
