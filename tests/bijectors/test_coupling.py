"""Couplings follow Glow's conventions: interleaved parameters, kept halves, scale functions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from flowkit.bijectors import AdditiveCoupling, AffineCoupling, channel_mask, checkerboard_mask
from flowkit.nn import MLP, GlowConditioner


class Recorder(nn.Module):
    """A conditioner returning a fixed tensor per call; it records what it received."""

    def __init__(self, theta: Tensor) -> None:
        super().__init__()
        self.theta = theta
        self.calls: list[Tensor] = []

    def forward(self, x_a: Tensor) -> Tensor:
        self.calls.append(x_a)
        return self.theta.expand(x_a.shape[:1] + self.theta.shape[1:])


class ContextRecorder(Recorder):
    def forward(self, x_a: Tensor, context: Tensor | None = None) -> Tensor:
        self.calls.append(context)
        return super().forward(x_a)


SCALES = {
    "sigmoid": lambda h: torch.sigmoid(h + 2.0),
    "exp": torch.exp,
    # A scale floor of 1e-3, and exactly 1 at h = 0.
    "softplus": lambda h: F.softplus(h + math.log(math.expm1(1.0 - 1e-3))) + 1e-3,
}


@pytest.mark.parametrize("scale_fn", sorted(SCALES))
@pytest.mark.parametrize("shift_first", [False, True])
def test_affine_coupling_split_mode_equations(scale_fn: str, shift_first: bool) -> None:
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    theta = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    conditioner = Recorder(theta)
    coupling = AffineCoupling(
        conditioner, channel_mask(4), scale_fn=scale_fn, shift_first=shift_first
    )
    z, log_abs_det = coupling(x)
    # Official Glow: shift = h[:, 0::2], scale = f(h[:, 1::2]); the first half is kept.
    shift, scale = theta[:, 0::2], SCALES[scale_fn](theta[:, 1::2])
    x_b = x[:, 2:]
    expected = (x_b + shift) * scale if shift_first else x_b * scale + shift
    assert torch.equal(conditioner.calls[0], x[:, :2])
    assert torch.equal(z[:, :2], x[:, :2])
    assert_close(z[:, 2:], expected)
    assert_close(log_abs_det, scale.log().expand_as(x_b).sum((1, 2, 3)))


def test_glow_scale_starts_at_sigmoid_two() -> None:
    # A zero-initialised Glow conditioner makes a new coupling scale by sigmoid(2), shift nothing.
    coupling = AffineCoupling(GlowConditioner(2, 4, hidden_channels=8), channel_mask(4))
    x = torch.randn(3, 4, 4, 4)
    z, log_abs_det = coupling(x)
    assert_close(z[:, 2:], x[:, 2:] * torch.sigmoid(torch.tensor(2.0)))
    assert_close(log_abs_det, torch.full((3,), 32 * math.log(torch.sigmoid(torch.tensor(2.0)))))
    additive = AdditiveCoupling(GlowConditioner(2, 2, hidden_channels=8), channel_mask(4))
    assert torch.equal(additive(x)[0], x)


def test_non_contiguous_channel_mask_keeps_the_marked_channels() -> None:
    mask = torch.tensor([False, True, True, False, True]).reshape(5, 1, 1)
    theta = torch.randn(1, 4, 2, 2)
    conditioner = Recorder(theta)
    coupling = AffineCoupling(conditioner, mask, scale_fn="exp")
    x = torch.randn(2, 5, 2, 2)
    z, log_abs_det = coupling(x)
    kept, changed = [1, 2, 4], [0, 3]
    assert torch.equal(conditioner.calls[0], x[:, kept])
    assert torch.equal(z[:, kept], x[:, kept])
    assert_close(z[:, changed], x[:, changed] * theta[:, 1::2].exp() + theta[:, 0::2])
    assert_close(log_abs_det, theta[:, 1::2].sum().expand(2))
    assert_close(coupling.inverse(z)[0], x)


def test_flipped_channel_mask_keeps_the_second_half() -> None:
    mask = channel_mask(4, event_rank=1, flip=True)
    assert mask.tolist() == [False, False, True, True]
    theta = torch.randn(1, 2)
    conditioner = Recorder(theta)
    x = torch.randn(3, 4)
    z, _ = AdditiveCoupling(conditioner, mask)(x)
    assert torch.equal(conditioner.calls[0], x[:, 2:])
    assert torch.equal(z, torch.cat([x[:, :2] + theta, x[:, 2:]], dim=1))


def test_checkerboard_mask_mode() -> None:
    mask = checkerboard_mask(3, 4)
    assert mask.shape == (1, 3, 4)
    assert mask[0].tolist()[0] == [True, False, True, False]
    assert mask[0].tolist()[1] == [False, True, False, True]
    assert torch.equal(checkerboard_mask(3, 4, flip=True), ~mask)
    theta = torch.randn(1, 4, 3, 4)
    conditioner = Recorder(theta)
    coupling = AffineCoupling(conditioner, mask, scale_fn="exp")
    x = torch.randn(2, 2, 3, 4)
    z, log_abs_det = coupling(x)
    # The network sees the kept entries and zeros elsewhere; only the others change.
    assert torch.equal(conditioner.calls[0], x * mask)
    changed = x * theta[:, 1::2].exp() + theta[:, 0::2]
    assert_close(z, torch.where(mask, x, changed))
    assert_close(log_abs_det, (theta[:, 1::2] * ~mask).sum().expand(2))


def test_context_is_passed_only_to_conditioners_that_take_it() -> None:
    x, context = torch.randn(3, 4), torch.randn(3, 2)
    with_context = ContextRecorder(torch.zeros(1, 4))
    AffineCoupling(with_context, channel_mask(4, event_rank=1))(x, context)
    AffineCoupling(with_context, channel_mask(4, event_rank=1)).inverse(x, context)
    assert with_context.calls[0] is context and with_context.calls[2] is context
    without = Recorder(torch.zeros(1, 4))
    AffineCoupling(without, channel_mask(4, event_rank=1))(x, context)
    assert torch.equal(without.calls[0], x[:, :2])

    mlp = MLP(2, 4, (8,), context_features=2, zero_init=False)
    coupling = AffineCoupling(mlp, channel_mask(4, event_rank=1), scale_fn="exp")
    z_first, _ = coupling(x, context)
    z_second, _ = coupling(x, context + 1.0)
    assert not torch.allclose(z_first, z_second)


def test_custom_scale_function() -> None:
    def bounded(h: Tensor) -> Tensor:
        return 0.5 * torch.tanh(h)

    theta = torch.randn(1, 4)
    coupling = AffineCoupling(Recorder(theta), channel_mask(4, event_rank=1), scale_fn=bounded)
    x = torch.randn(5, 4)
    z, log_abs_det = coupling(x)
    assert_close(z[:, 2:], x[:, 2:] * (0.5 * torch.tanh(theta[:, 1::2])).exp() + theta[:, 0::2])
    assert_close(log_abs_det, (0.5 * torch.tanh(theta[:, 1::2])).sum().expand(5))
    assert "bounded" in repr(coupling)
