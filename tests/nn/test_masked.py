"""Tests of MaskedInput."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowkit.bijectors import checkerboard_mask
from flowkit.nn import MaskedInput


class _Record(nn.Module):
    def forward(self, x):
        self.seen = x
        return x


def test_appends_the_mask_as_the_last_channel():
    mask = checkerboard_mask(3, 4)
    net = MaskedInput(_Record(), mask)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    out = net(x)
    assert out.shape == (2, 6, 3, 4) and out.dtype == torch.float64
    assert torch.equal(out[:, :5], x)
    assert torch.equal(out[:, 5], mask.to(torch.float64).expand(2, 3, 4))


def test_accepts_a_two_dimensional_mask_and_moves_with_the_module():
    net = MaskedInput(_Record(), checkerboard_mask(2, 2)[0]).double()
    assert net.mask.dtype == torch.float64 and net.mask.shape == (1, 1, 2, 2)


def test_rejects_a_mask_with_channels():
    with pytest.raises(ValueError, match=r"\(1, H, W\).*\(2, 3, 3\)"):
        MaskedInput(_Record(), torch.ones(2, 3, 3, dtype=torch.bool))
