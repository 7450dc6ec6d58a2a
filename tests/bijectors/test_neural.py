"""The deep sigmoidal (DSF) and deep dense sigmoidal (DDSF) maps of neural autoregressive flows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.bijectors import DeepDenseSigmoidMap, DeepSigmoidMap
from flowkit.bijectors.maps import ElementwiseMap

MAPS = {
    "dsf-1": lambda: DeepSigmoidMap(4, 1),
    "dsf-3": lambda: DeepSigmoidMap(3, 3),
    "ddsf-1": lambda: DeepDenseSigmoidMap(4, 1),
    "ddsf-3": lambda: DeepDenseSigmoidMap(3, 3),
}


def _raw(transform: ElementwiseMap, count: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (count, transform.params_per_element)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("name", MAPS)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.0, 8.0))
def test_increasing_for_any_raw_parameters(name, seed, scale):
    transform = MAPS[name]()
    theta = _raw(transform, 1, scale, seed).expand(400, -1)
    x = torch.linspace(-30.0, 30.0, 400, dtype=torch.float64)
    y, log_derivative = transform(x, (theta,))
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(log_derivative).all())
    # Strictly increasing wherever the float64 result can resolve it; never decreasing.
    assert bool((y.diff() >= 0).all())
    assert bool((log_derivative < 50).all())


@pytest.mark.parametrize("name", MAPS)
def test_log_derivative_equals_autograd_in_float64(name):
    transform = MAPS[name]()
    theta = _raw(transform, 64, 2.0, seed=1)
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4
    x.requires_grad_(True)
    y, log_derivative = transform(x, (theta,))
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, slope.log(), rtol=1e-10, atol=1e-10)


def test_log_derivative_stays_finite_where_the_sigmoids_saturate():
    transform = DeepDenseSigmoidMap(3, 2)
    theta = _raw(transform, 3, 1.0, seed=3).float()
    # In float32 every sigmoid here rounds to 0 or 1; the log-space forms keep the map moving.
    y, log_derivative = transform(torch.tensor([-400.0, 0.0, 400.0]), (theta,))
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(log_derivative).all())
    assert y[0] < y[1] < y[2]


@pytest.mark.parametrize("name", MAPS)
def test_zero_parameters_are_the_identity(name):
    transform = MAPS[name]()
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    y, log_derivative = transform(x, (torch.zeros(11, transform.params_per_element).double(),))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x))


@pytest.mark.parametrize("name", MAPS)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 4.0))
def test_bracket_holds_the_root_and_inverse_meets_its_tolerance(name, seed, scale):
    transform = MAPS[name]()
    theta = _raw(transform, 32, scale, seed)
    x = torch.randn(32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 5
    y, log_derivative = transform(x, (theta,))
    low, high = transform.bracket(y, (theta,))
    assert bool(
        (low <= x + 1e-9 * (1 + x.abs())).all() and (x <= high + 1e-9 * (1 + x.abs())).all()
    )
    x_back, inverse_log_derivative = transform.inverse(y, (theta,))
    # Working precision, plus what rounding y moves the root by: a few ulps of y over g'(x).
    allowed = 1e-12 * (1 + x.abs()) + 8e-16 * (1 + y.abs()) * torch.exp(-log_derivative)
    assert bool(((x_back - x).abs() <= allowed).all()), (x_back - x).abs().max()
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, rtol=1e-8, atol=1e-8)


def test_inverse_in_float32_is_within_its_tolerance():
    transform = DeepSigmoidMap(4, 2)
    theta = _raw(transform, 200, 1.0, seed=5).float()
    x = torch.linspace(-6, 6, 200)
    y, log_derivative = transform(x, (theta,))
    x_back, _ = transform.inverse(y, (theta,))
    allowed = 1e-5 * (1 + x.abs()) + 4e-7 * (1 + y.abs()) * torch.exp(-log_derivative)
    assert bool(((x_back - x).abs() <= allowed).all())


def test_inverse_gradients_are_the_implicit_ones():
    transform = DeepDenseSigmoidMap(2, 2)
    theta = _raw(transform, 3, 1.0, seed=6).requires_grad_(True)
    y = torch.tensor([-2.0, 0.3, 4.0], dtype=torch.float64, requires_grad=True)

    def inverse(y: torch.Tensor, theta: torch.Tensor):
        return transform.inverse(y, (theta,))

    assert torch.autograd.gradcheck(inverse, (y, theta), atol=1e-6)


def test_constructor_checks_its_sizes():
    with pytest.raises(ValueError, match="hidden"):
        DeepSigmoidMap(0)
    with pytest.raises(ValueError, match="layers"):
        DeepDenseSigmoidMap(4, 0)
