"""Couplings follow Glow's conventions: interleaved parameters, kept halves, scale functions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from flowkit.bijectors import (
    AdditiveCoupling,
    AffineCoupling,
    AffineMap,
    ChannelSplit,
    Compose,
    Coupling,
    channel_mask,
    checkerboard_mask,
)
from flowkit.nn import MLP, GlowConditioner, ScaledTanh


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


def _perturbed(module: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)
    return module


def test_state_dict_keys_stay_at_the_coupling_level() -> None:
    # Checkpoints hold the split's buffers and the scale function's parameters directly under the
    # coupling; the map and the split being modules of their own must not change those keys.
    mask = torch.tensor([True, False, True, False])
    coupling = AffineCoupling(MLP(2, 4, (8,)), mask, scale_fn=ScaledTanh(2, event_rank=1))
    keys = set(coupling.state_dict())
    network_keys = {f"conditioner.{k}" for k in coupling.conditioner.state_dict()}
    assert keys == network_keys | {
        "kept_index",
        "changed_index",
        "merge_index",
        "log_scale_fn.scale",
    }
    board = AffineCoupling(GlowConditioner(2, 4, hidden_channels=4), checkerboard_mask(2, 2))
    assert {k for k in board.state_dict() if not k.startswith("conditioner.")} == {"mask"}
    # A state dict in that layout loads strictly and reproduces the map.
    _perturbed(coupling)
    fresh = AffineCoupling(MLP(2, 4, (8,)), mask, scale_fn=ScaledTanh(2, event_rank=1))
    fresh.load_state_dict(coupling.state_dict())
    x = torch.randn(5, 4)
    assert_close(fresh(x), coupling(x), rtol=0, atol=0)
    assert torch.equal(fresh.transform.log_scale_fn.scale, coupling.transform.log_scale_fn.scale)


def test_coupling_composes_any_map_with_any_split() -> None:
    # A Coupling with the affine map equals AffineCoupling; the split may be given as an object.
    torch.manual_seed(0)
    mask = channel_mask(4, event_rank=1, flip=True)
    network = _perturbed(MLP(2, 4, (8,)))
    generic = Coupling(network, ChannelSplit(mask), AffineMap("exp"))
    specific = AffineCoupling(network, mask, scale_fn="exp")
    x = torch.randn(6, 4)
    assert_close(generic(x), specific(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="Coupling expects an ElementwiseMap transform, got Linear"):
        Coupling(network, mask, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="AffineCoupling expects a mask with both True and False"):
        AffineCoupling(network, torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("scale_fn", ["exp", "sigmoid"])
def test_memory_saving_rebuild_of_a_mask_split_matches_plain_autograd(scale_fn: str) -> None:
    # Checkerboard couplings rebuild their input with one conditioner pass, as channel splits do.
    def build(memory_saving: bool) -> Compose:
        torch.manual_seed(0)
        parts = [
            AffineCoupling(
                GlowConditioner(2, 4, hidden_channels=4),
                checkerboard_mask(4, 4, flip=i % 2 == 1),
                scale_fn=scale_fn,
            )
            for i in range(3)
        ]
        return _perturbed(Compose(*parts, memory_saving=memory_saving).double(), scale=0.05)

    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    results = []
    for memory_saving in (False, True):
        model = build(memory_saving)
        leaf = x.clone().requires_grad_(True)
        z, log_abs_det = model(leaf)
        (0.5 * z.square().sum() - log_abs_det.sum()).backward()
        results.append([leaf.grad] + [p.grad for p in model.parameters()])
    for expected, got in zip(*results):
        assert_close(got, expected, rtol=1e-9, atol=1e-12)
    coupling = build(False)[1]
    z = coupling(x)[0]
    x_rebuilt, _, z_again, log_abs_det, _ = coupling.rebuild_for_backward(z)
    assert_close(x_rebuilt, x, rtol=0, atol=1e-12)
    assert_close(z_again, z, rtol=0, atol=1e-12)
    assert_close(log_abs_det, coupling(x)[1], rtol=0, atol=1e-12)
