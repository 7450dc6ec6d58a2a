"""Elementwise bijectors: closed forms, and log-derivatives that stay accurate far from zero."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from torch.testing import assert_close

from flowkit.bijectors import (
    Affine,
    Exp,
    LeakyReLU,
    LogisticToNormal,
    Logit,
    Sigmoid,
    Softplus,
    Tanh,
)
from flowkit.testing.strategies import tensors

FAR = torch.tensor([-100.0, -50.0, -20.0, 0.0, 20.0, 50.0, 100.0])


def _reference_log_derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    """Stable float64 closed forms, written independently of the library's."""
    x = x.double()
    if name == "sigmoid":  # log s(x) + log s(-x)
        return -x.abs() - 2.0 * torch.log1p(torch.exp(-x.abs()))
    if name == "tanh":  # log(1 - tanh(x)^2) = log 4 - 2|x| - 2 log(1 + e^{-2|x|})
        return math.log(4.0) - 2.0 * x.abs() - 2.0 * torch.log1p(torch.exp(-2.0 * x.abs()))
    if name == "softplus":  # log s(x)
        return torch.minimum(x, torch.zeros_like(x)) - torch.log1p(torch.exp(-x.abs()))
    raise KeyError(name)


@pytest.mark.parametrize(
    ("name", "bijector"), [("sigmoid", Sigmoid()), ("tanh", Tanh()), ("softplus", Softplus())]
)
def test_log_derivative_is_stable_in_float32(name, bijector) -> None:
    _, log_derivative = bijector(FAR)
    assert log_derivative.dtype == torch.float32
    assert bool(torch.isfinite(log_derivative).all()), log_derivative
    expected = _reference_log_derivative(name, FAR).float()
    assert_close(log_derivative, expected, rtol=1e-6, atol=1e-6)


def test_softplus_inverse_is_accurate_near_zero() -> None:
    z = torch.tensor([1e-7, 1e-5, 1e-3, 0.5, 30.0])
    x, _ = Softplus().inverse(z)
    expected = torch.log(torch.expm1(z.double()))
    assert_close(x.double(), expected, rtol=1e-6, atol=0.0)


@given(x=tensors((4, 3), min_value=-6.0, max_value=6.0))
def test_closed_forms(x: torch.Tensor) -> None:
    assert_close(Exp()(x)[0], x.exp())
    assert_close(Sigmoid()(x)[0], torch.sigmoid(x))
    assert_close(Tanh()(x)[0], torch.tanh(x))
    assert_close(Softplus()(x)[0], torch.nn.functional.softplus(x))
    leaky, log_derivative = LeakyReLU(0.2)(x)
    assert_close(leaky, torch.where(x < 0, 0.2 * x, x))
    assert_close(log_derivative, (x < 0).double() * math.log(0.2))
    u = torch.sigmoid(x)
    alpha = 0.05
    assert_close(Logit(alpha)(u)[0], torch.logit(alpha + (1 - 2 * alpha) * u))
    affine = Affine((3,), shift=0.5, scale=2.0, event_rank=1).double()
    z, log_abs_det = affine(x)
    assert_close(z, 2.0 * x + 0.5)
    assert_close(log_abs_det, torch.full((4,), 3 * math.log(2.0), dtype=torch.float64))


def test_event_rank_sums_the_log_derivative() -> None:
    x = torch.randn(2, 3, 4)
    _, elementwise = Sigmoid()(x)
    _, rank_two = Sigmoid(event_rank=2)(x)
    assert elementwise.shape == (2, 3, 4) and rank_two.shape == (2,)
    assert_close(rank_two, elementwise.sum((1, 2)))


def test_fixed_affine_has_no_parameters() -> None:
    affine = Affine((2,), shift=1.0, scale=3.0, learnable=False)
    assert list(affine.parameters()) == []
    assert set(affine.state_dict()) == {"shift", "log_scale"}


def test_logistic_to_normal_maps_the_logistic_cdf_to_the_normal_one() -> None:
    x = torch.linspace(-35, 35, 141, dtype=torch.float64)
    z, log_derivative = LogisticToNormal()(x)
    # Phi(z) = sigma(x), compared in log space on the side where each keeps its digits.
    assert_close(torch.special.log_ndtr(-z.abs()), torch.nn.functional.logsigmoid(-x.abs()))
    slope = torch.autograd.functional.jacobian(lambda t: LogisticToNormal()(t)[0], x).diagonal()
    assert_close(log_derivative, slope.log())
    back, inverse_log_derivative = LogisticToNormal().inverse(z)
    assert_close(back, x)
    assert_close(inverse_log_derivative, -log_derivative)
    # Logistic noise from float32 uniforms stays finite.
    tails = LogisticToNormal()(torch.tensor([-17.0, 17.0]))
    assert bool(torch.isfinite(tails[0]).all() and torch.isfinite(tails[1]).all())
