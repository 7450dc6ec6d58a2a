"""SplitApply and SwapHalves on the parts of a split; ActNorm with a scale per position."""

from __future__ import annotations

import pytest
import torch

import flowkit
from flowkit.bijectors import (
    ActNorm,
    ChannelSplit,
    CheckerboardSplit,
    Flatten,
    InvertibleConv1x1,
    SplitApply,
    SwapHalves,
    channel_mask,
)


def test_split_apply_maps_each_half_with_its_own_bijector() -> None:
    split = CheckerboardSplit(4, 6, alternate=False)
    first = InvertibleConv1x1(3, lu=False, seed=0).double()
    second = InvertibleConv1x1(3, lu=False, seed=1).double()
    step = SplitApply(split, first, second)
    x = torch.randn(5, 3, 4, 6, dtype=torch.float64)
    z, log_abs_det = step(x)
    z_a, log_a = first(x[..., 0::2])
    z_b, log_b = second(x[..., 1::2])
    assert torch.equal(z[..., 0::2], z_a) and torch.equal(z[..., 1::2], z_b)
    torch.testing.assert_close(log_abs_det, log_a + log_b)
    # Two different matrices: not one 1x1 convolution over the whole image.
    assert not torch.allclose(z[..., 1::2], first(x[..., 1::2])[0])
    back, inverse_log_abs_det = step.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


def test_split_apply_on_channel_halves() -> None:
    step = SplitApply(ChannelSplit(channel_mask(4)), ActNorm(2), InvertibleConv1x1(2, seed=0))
    x = torch.randn(3, 4, 2, 2)
    flowkit.initialize(step, x)
    z, _ = step(x)
    # The kept channels are normalised over batch and positions, the others only mixed.
    torch.testing.assert_close(z[:, :2].mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, 2:], step.second(x[:, 2:])[0])


def test_split_apply_refuses_what_does_not_fit() -> None:
    split = CheckerboardSplit(2, 4)
    with pytest.raises(TypeError, match="expects a Split, got Tensor"):
        SplitApply(channel_mask(4), ActNorm(1), ActNorm(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="second as a Bijector, got Linear"):
        SplitApply(split, ActNorm(1), torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank 3 .* got 3 -> 1"):
        SplitApply(split, ActNorm(1), Flatten((1, 2, 2)))
    with pytest.raises(ValueError, match="SplitApply expects"):
        SplitApply(split, ActNorm(1), ActNorm(1))(torch.randn(2, 1, 2, 6))


def test_actnorm_per_position_initialises_each_position_from_the_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    spread = torch.rand(2, 3, 4, generator=generator) * 5 + 0.5
    centre = torch.randn(2, 3, 4, generator=generator) * 3
    x = torch.randn(64, 2, 3, 4, generator=generator) * spread + centre
    norm = ActNorm(2, spatial_shape=(3, 4))
    flowkit.initialize(norm, x)
    z, log_abs_det = norm(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2, 3, 4), atol=1e-4, rtol=0)
    # One parameter per element: the log-determinant is the sum of all log-scales.
    expected = -torch.log(x.std(0, unbiased=False)).sum()
    torch.testing.assert_close(log_abs_det, expected.expand(64), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        flowkit.initialize(ActNorm(2, spatial_shape=(3, 4)), x[:1])
    with pytest.raises(ValueError, match=r"spatial_shape as 2 positive ints"):
        ActNorm(2, spatial_shape=(3,))
    with pytest.raises(ValueError, match="ActNorm expects"):
        norm(torch.randn(2, 2, 4, 3))


def test_swap_halves_is_the_official_merge_of_a_flipped_tuple() -> None:
    x = torch.randn(2, 3, 4, 6)
    columns = SwapHalves(CheckerboardSplit(4, 6, alternate=False))
    z, log_abs_det = columns(x)
    # Official Inverse(CheckerboardSplit) of the tuple (odd, even): odd columns in even places.
    assert torch.equal(z, torch.stack([x[..., 1::2], x[..., 0::2]], -1).flatten(-2))
    assert torch.equal(log_abs_det, torch.zeros(2)) and torch.equal(columns.inverse(z)[0], x)
    channels = SwapHalves(ChannelSplit(channel_mask(4)))
    y = torch.randn(2, 4, 3, 3)
    assert torch.equal(channels(y)[0], torch.cat([y[:, 2:], y[:, :2]], 1))
    with pytest.raises(ValueError, match="parts of the same shape"):
        SwapHalves(ChannelSplit(channel_mask(3)))(torch.randn(2, 3, 2, 2))
    with pytest.raises(TypeError, match="expects a Split"):
        SwapHalves(channel_mask(4))  # type: ignore[arg-type]
