"""Tests of the BatchNorm bijector: the contract in eval mode, batch statistics in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

from flowkit.bijectors import BatchNorm, InverseNotAvailable
from flowkit.testing import check_bijector
from flowkit.testing.strategies import batch_shapes, scales, seeds, st
from tests.registry_linear import trained_batch_norm


@given(channels=st.integers(1, 5), batch=batch_shapes(), seed=seeds(), scale=scales())
def test_vector_contract_in_eval_mode(channels, batch, seed, scale):
    norm = trained_batch_norm(channels, seed=seed)
    check_bijector(norm, (channels,), batch_shape=batch, seed=seed, input_scale=scale)


@given(channels=st.integers(1, 3), side=st.integers(1, 3), seed=seeds())
def test_image_contract_in_eval_mode(channels, side, seed):
    norm = trained_batch_norm(channels, event_rank=3, seed=seed)
    check_bijector(norm, (channels, side, side + 1), seed=seed)


def test_training_mode_is_not_batch_independent():
    norm = BatchNorm(3)
    with pytest.raises(AssertionError, match="not independent"):
        check_bijector(norm, (3,), batch_shape=(4,), check_transform=False)


@pytest.mark.parametrize("event_shape", [(3,), (2, 3, 4)], ids=["vector", "image"])
def test_training_log_det_and_running_statistics(event_shape):
    channels = event_shape[0]
    event_rank = len(event_shape)
    momentum, eps = 0.3, 1e-3
    norm = BatchNorm(channels, event_rank=event_rank, momentum=momentum, eps=eps).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.log_scale.normal_(generator=generator)
        norm.bias.normal_(generator=generator)
        norm.running_mean.normal_(generator=generator)
        norm.running_var.uniform_(0.5, 2.0, generator=generator)
    old_mean = norm.running_mean.detach().numpy().reshape(-1).copy()
    old_var = norm.running_var.detach().numpy().reshape(-1).copy()
    x = torch.randn((2, 5) + event_shape, generator=generator, dtype=torch.float64) * 3 + 1

    z, log_abs_det = norm(x)

    # Independent computation in numpy: channel axis first, everything else flattened.
    values = np.moveaxis(x.numpy(), 2, 0).reshape(channels, -1)
    mean, var = values.mean(axis=1), values.var(axis=1)
    positions = int(np.prod(event_shape[1:]))
    log_scale = norm.log_scale.detach().numpy().reshape(-1)
    bias = norm.bias.detach().numpy().reshape(-1)
    expected_log_det = positions * (log_scale.sum() - 0.5 * np.log(var + eps).sum())
    assert log_abs_det.shape == (2, 5)
    np.testing.assert_allclose(log_abs_det.detach().numpy(), expected_log_det, rtol=1e-12)
    shape = (channels,) + (1,) * (event_rank - 1)
    expected_z = (x.numpy() - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    expected_z = expected_z * np.exp(log_scale.reshape(shape)) + bias.reshape(shape)
    np.testing.assert_allclose(z.detach().numpy(), expected_z, rtol=1e-10, atol=1e-12)

    unbiased = values.var(axis=1, ddof=1)
    np.testing.assert_allclose(
        norm.running_mean.numpy().reshape(-1), (1 - momentum) * old_mean + momentum * mean
    )
    np.testing.assert_allclose(
        norm.running_var.numpy().reshape(-1), (1 - momentum) * old_var + momentum * unbiased
    )


def test_training_gradient_flows_through_batch_statistics():
    norm = BatchNorm(2).double()
    x = (torch.randn(6, 2, dtype=torch.float64) * 2).requires_grad_(True)
    _, log_abs_det = norm(x)
    (gradient,) = torch.autograd.grad(log_abs_det.sum(), x)
    # d/dx of -0.5 log(var + eps) summed over the batch: -(x - mean) / (var + eps) per element.
    centred = x.detach() - x.detach().mean(0)
    var = centred.square().mean(0)
    torch.testing.assert_close(gradient, -6 * centred / (6 * (var + norm.eps)))


def test_training_standardises_the_batch():
    norm = BatchNorm(4)
    z, _ = norm(torch.randn(512, 4) * torch.tensor([0.1, 1.0, 5.0, 20.0]) + 3)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_inverse_in_training_mode_raises_and_eval_mode_inverts():
    norm = BatchNorm(3)
    x = torch.randn(8, 3) * 2 + 1
    norm(x)
    with pytest.raises(InverseNotAvailable, match=r"\.eval\(\)"):
        norm.inverse(torch.randn(8, 3))
    norm.eval()
    z, log_abs_det = norm(x)
    x_back, inverse_log_abs_det = norm.inverse(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


def test_eval_mode_uses_running_statistics_and_leaves_them_alone():
    norm = BatchNorm(2, eps=1e-4)
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, -2.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    norm.eval()
    x = torch.tensor([[3.0, -1.0]])
    z, log_abs_det = norm(x)
    torch.testing.assert_close(z, torch.tensor([[2.0 / (4.0001**0.5), 1.0 / (0.2501**0.5)]]))
    expected = -0.5 * (np.log(4.0001) + np.log(0.2501))
    assert log_abs_det.item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(norm.running_mean, torch.tensor([1.0, -2.0]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": 0},
        {"channels": 2, "momentum": 1.5},
        {"channels": 2, "eps": 0.0},
        {"channels": 2, "event_rank": 0},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError, match="BatchNorm expects"):
        BatchNorm(**kwargs)


def test_wrong_channels_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, \*, \*\).*\(2, 4, 4\)"):
        BatchNorm(3, event_rank=3)(torch.randn(1, 2, 4, 4))
