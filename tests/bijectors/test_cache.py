"""Tests of ParameterCache through the layers that use it (LULinear, InvertibleConv1x1).

The reference for every cached value is the same layer run with autograd on, which bypasses the
cache and rebuilds the weight from the current parameters.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flowkit.bijectors import InvertibleConv1x1, LULinear, ParameterCache


def _uncached(layer, x, inverse=False):
    with torch.enable_grad():
        run = layer.inverse if inverse else layer
        z, log_abs_det = run(x)
    return z.detach(), log_abs_det.detach()


def _cached(layer, x, inverse=False):
    with torch.no_grad():
        run = layer.inverse if inverse else layer
        return run(x)


def _assert_matches_parameters(layer, x):
    for inverse in (False, True):
        z, log_abs_det = _cached(layer, x, inverse)
        z_ref, log_abs_det_ref = _uncached(layer, x, inverse)
        torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
        torch.testing.assert_close(log_abs_det, log_abs_det_ref, rtol=0, atol=0)


def _warm(layer, x):
    _cached(layer, x)
    _cached(layer, x, inverse=True)


def test_values_are_reused_without_autograd_and_rebuilt_with_it():
    layer = LULinear(4, seed=0)
    with torch.no_grad():
        first = layer.weight_and_log_det()
        second = layer.weight_and_log_det()
    assert first[0] is second[0] and first[1] is second[1]
    weight, _ = layer.weight_and_log_det()
    assert weight.requires_grad and weight is not first[0]
    weight.sum().backward()
    assert layer.lower_entries.grad is not None


def test_optimizer_step_invalidates():
    layer = LULinear(4, seed=0)
    x = torch.randn(5, 4)
    _warm(layer, x)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    z, log_abs_det = layer(x)
    (z.square().sum() - log_abs_det.sum()).backward()
    before = _cached(layer, x)[0].clone()
    optimizer.step()
    after = _cached(layer, x)[0]
    assert not torch.allclose(before, after)
    _assert_matches_parameters(layer, x)


def test_load_state_dict_invalidates():
    layer, other = LULinear(4, seed=0), LULinear(4, seed=1)
    x = torch.randn(5, 4)
    _warm(layer, x)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(_cached(layer, x)[0], _cached(other, x)[0])
    _assert_matches_parameters(layer, x)


def test_double_invalidates_and_changes_dtype():
    layer = LULinear(4, seed=0)
    x = torch.randn(5, 4)
    _warm(layer, x)
    layer.double()
    z, log_abs_det = _cached(layer, x.double())
    assert z.dtype == torch.float64 and log_abs_det.dtype == torch.float64
    _assert_matches_parameters(layer, x.double())
    x_back, _ = _cached(layer, z, inverse=True)
    torch.testing.assert_close(x_back, x.double(), rtol=1e-12, atol=1e-12)


def test_in_place_edit_of_a_buffer_invalidates():
    layer = LULinear(3, seed=0)
    x = torch.randn(2, 3)
    _warm(layer, x)
    with torch.no_grad():
        layer.sign.neg_()
    _assert_matches_parameters(layer, x)


def test_deepcopy_is_independent():
    layer = LULinear(3, seed=0)
    x = torch.randn(2, 3)
    _warm(layer, x)
    clone = copy.deepcopy(layer)
    with torch.no_grad():
        clone.log_diagonal.add_(1.0)
    _assert_matches_parameters(clone, x)
    _assert_matches_parameters(layer, x)
    assert not torch.allclose(_cached(layer, x)[1], _cached(clone, x)[1])


def test_inference_mode_values_stay_out_of_autograd():
    layer = LULinear(3, seed=0)
    x = torch.randn(2, 3)
    with torch.inference_mode():
        layer(x)
    for parameter in layer.parameters():
        parameter.requires_grad_(False)
    inputs = x.clone().requires_grad_(True)
    z, _ = layer(inputs)
    z.sum().backward()
    assert inputs.grad is not None


def test_invertible_conv_optimizer_step_invalidates():
    conv = InvertibleConv1x1(4, seed=0)
    x = torch.randn(2, 4, 3, 3)
    _warm(conv, x)
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(0.1)
    _assert_matches_parameters(conv, x)


def test_cache_is_not_in_the_state_dict():
    layer = LULinear(3, seed=0)
    _warm(layer, torch.randn(2, 3))
    keys = set(layer.state_dict())
    assert keys == {
        "bias",
        "lower_entries",
        "upper_entries",
        "log_diagonal",
        "lower_indices",
        "upper_indices",
        "permutation",
        "sign",
    }


def test_clear_forgets_values():
    module = nn.Linear(2, 2)
    cache = ParameterCache()
    calls = []

    def compute():
        calls.append(1)
        return module.weight.sum()

    with torch.no_grad():
        cache.get(module, "total", compute)
        cache.get(module, "total", compute)
        cache.clear()
        cache.get(module, "total", compute)
    assert len(calls) == 2


@pytest.mark.parametrize("mode", ["no_grad", "frozen"])
def test_caches_whenever_no_gradient_is_needed(mode):
    module = nn.Linear(2, 2)
    cache = ParameterCache()
    if mode == "frozen":
        module.requires_grad_(False)
        context = torch.enable_grad()
    else:
        context = torch.no_grad()
    with context:
        first = cache.get(module, "w", lambda: module.weight * 2)
        second = cache.get(module, "w", lambda: module.weight * 2)
    assert first is second
