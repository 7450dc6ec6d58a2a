"""The MLP conditioner: zero-initialised output, context concatenated and broadcast."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from flowkit.nn import MLP


def test_zero_initialised_output() -> None:
    net = MLP(3, 4, (8, 8))
    assert torch.equal(net(torch.randn(5, 3)), torch.zeros(5, 4))
    assert not torch.equal(MLP(3, 4, zero_init=False)(torch.randn(5, 3)), torch.zeros(5, 4))


def test_context_is_concatenated_and_broadcast() -> None:
    net = MLP(2, 3, (8,), context_features=4, activation=nn.Tanh, zero_init=False)
    x, context = torch.randn(6, 5, 2), torch.randn(5, 4)
    out = net(x, context)
    assert out.shape == (6, 5, 3)
    expected = net.network(torch.cat([x, context.expand(6, 5, 4)], dim=-1))
    assert_close(out, expected)
    assert isinstance(net.network[1], nn.Tanh)


def test_context_only_network() -> None:
    net = MLP(0, 3, (8,), context_features=2, zero_init=False)
    context = torch.randn(4, 2)
    assert_close(net(torch.empty(4, 0), context), net.network(context))


def test_errors() -> None:
    with pytest.raises(ValueError, match="in_features > 0 or context_features > 0"):
        MLP(0, 3)
    net = MLP(2, 3, context_features=4)
    with pytest.raises(ValueError, match="4 features, got None"):
        net(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"4 features, got shape \(3, 5\)"):
        net(torch.randn(3, 2), torch.randn(3, 5))
