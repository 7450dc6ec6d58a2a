"""The UMNN map (integral of a positive network) and its Clenshaw–Curtis quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.bijectors import UMNNMap
from flowkit.bijectors.umnn import MIN_INTEGRAND, clenshaw_curtis


def _exact_monomial_integral(degree: int) -> float:
    return 0.0 if degree % 2 else 2.0 / (degree + 1)


@pytest.mark.parametrize("nodes", [2, 3, 6, 9, 17, 33])
def test_clenshaw_curtis_is_exact_on_polynomials_up_to_its_degree(nodes):
    points, weights = clenshaw_curtis(nodes)
    n = nodes - 1
    # Degree n, and n + 1 for even n by symmetry.
    exact_degree = n + 1 if n % 2 == 0 else n
    for degree in range(exact_degree + 1):
        value = float((weights * points**degree).sum())
        assert abs(value - _exact_monomial_integral(degree)) < 1e-13, (nodes, degree)
    assert bool((weights > 0).all())
    # The first even-degree Chebyshev polynomial past its exactness is no longer integrated
    # exactly: at the nodes it takes the values of a lower one.
    beyond = exact_degree + 1 if exact_degree % 2 else exact_degree + 2
    value = float((weights * torch.cos(beyond * torch.arccos(points))).sum())
    assert abs(value - 2 / (1 - beyond**2)) > 1e-4


def test_clenshaw_curtis_integrates_a_smooth_function_to_rounding():
    points, weights = clenshaw_curtis(33)
    value = float((weights * torch.exp(points)).sum())
    assert abs(value - (math.e - 1 / math.e)) < 1e-14


def _umnn(seed: int, scale: float, nodes: int = 65) -> UMNNMap:
    torch.manual_seed(seed)
    transform = UMNNMap(3, (8, 8), nodes=nodes).double()
    with torch.no_grad():
        for parameter in transform.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return transform


def _theta(count: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 4, generator=generator, dtype=torch.float64) * scale


@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.0, 0.5),
    raw_scale=st.floats(0.0, 10.0),
    nodes=st.sampled_from([17, 33]),
)
def test_increasing_for_any_raw_parameters(seed, scale, raw_scale, nodes):
    # Monotone up to the quadrature's error (see UMNNMap): any raw parameters from the
    # conditioner, an integrand network with weights within 0.5 of its initialisation.
    transform = _umnn(seed, scale, nodes=nodes)
    theta = _theta(1, raw_scale, seed).expand(300, -1)
    x = torch.linspace(-10.0, 10.0, 300, dtype=torch.float64)
    with torch.no_grad():
        y, log_derivative = transform(x, (theta,))
    assert bool(torch.isfinite(y).all())
    assert bool((y.diff() > 0).all())
    assert bool((log_derivative >= math.log(MIN_INTEGRAND) - 1e-12).all())


def test_log_derivative_is_the_integrand_and_the_quadrature_derivative_in_float64():
    transform = _umnn(seed=0, scale=0.5)
    theta = _theta(50, 1.0, seed=1)
    x = torch.linspace(-4, 4, 50, dtype=torch.float64).requires_grad_(True)
    y, log_derivative = transform(x, (theta,))
    (slope,) = torch.autograd.grad(y.sum(), x)
    # The derivative of the quadrature is that of the integral up to the quadrature's error.
    torch.testing.assert_close(log_derivative, slope.log(), rtol=1e-9, atol=1e-9)


def test_the_map_is_the_integral_plus_the_offset():
    transform = _umnn(seed=2, scale=0.5)
    theta = _theta(1, 1.0, seed=3)
    x = torch.tensor([2.5], dtype=torch.float64)
    with torch.no_grad():
        y, _ = transform(x, (theta,))
        # A trapezoidal rule on a fine grid, independently of the nodes.
        grid = torch.linspace(0, 2.5, 20001, dtype=torch.float64)
        log_g = transform._log_integrand(grid.unsqueeze(0), theta[:, :3])
        integral = torch.trapezoid(log_g.exp(), grid)
    torch.testing.assert_close(y, integral + theta[:, 3], rtol=1e-7, atol=1e-7)


@given(seed=st.integers(0, 2**16), scale=st.floats(0.0, 0.5))
def test_inverse_meets_its_tolerance(seed, scale):
    transform = _umnn(seed, scale, nodes=17)
    theta = _theta(16, 2.0, seed)
    x = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 4
    with torch.no_grad():
        y, log_derivative = transform(x, (theta,))
        low, high = transform.bracket(y, (theta,))
        x_back, inverse_log_derivative = transform.inverse(y, (theta,))
    assert bool(((low <= x) & (x <= high)).all())
    allowed = 1e-12 * (1 + x.abs()) + 8e-16 * (1 + y.abs()) * torch.exp(-log_derivative)
    assert bool(((x_back - x).abs() <= allowed).all()), (x_back - x).abs().max()
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, rtol=1e-8, atol=1e-8)


def test_inverse_gradients_are_the_implicit_ones():
    transform = _umnn(seed=4, scale=0.3, nodes=9)
    theta = _theta(2, 1.0, seed=5).requires_grad_(True)
    y = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)

    def inverse(y: torch.Tensor, theta: torch.Tensor):
        return transform.inverse(y, (theta,))

    assert torch.autograd.gradcheck(inverse, (y, theta), atol=1e-6)


def test_zero_parameters_are_the_identity():
    transform = UMNNMap(2, (4,), nodes=5).double()
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    y, log_derivative = transform(x, (torch.zeros(7, 3, dtype=torch.float64),))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x))


def test_each_element_has_its_own_integrand():
    torch.manual_seed(0)
    transform = UMNNMap(2, (4,), nodes=9, elements=3).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    theta = torch.randn(5, 3, 3, dtype=torch.float64)
    before, _ = transform(x, (theta,))
    with torch.no_grad():
        for parameter in transform.integrand.parameters():
            parameter[1].add_(torch.randn_like(parameter[1]))
    after, _ = transform(x, (theta,))
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().min() > 0
    # With the same weights and inputs, two elements give the same value.
    with torch.no_grad():
        for parameter in transform.integrand.parameters():
            parameter[2].copy_(parameter[0])
    same = torch.cat([x[:, :1], x[:, 1:2], x[:, :1]], dim=1)
    y, _ = transform(same, (torch.stack([theta[:, 0], theta[:, 1], theta[:, 0]], dim=1),))
    torch.testing.assert_close(y[:, 2], y[:, 0])


def test_per_element_integrands_need_their_number_of_elements():
    transform = UMNNMap(2, (4,), nodes=5, elements=3)
    with pytest.raises(ValueError, match="3 elements on the last axis, got shape \\(2, 4\\)"):
        transform(torch.zeros(2, 4), (torch.zeros(2, 4, 3),))
    with pytest.raises(ValueError, match="elements"):
        UMNNMap(elements=0)


def test_constructor_checks_its_sizes():
    with pytest.raises(ValueError, match="nodes"):
        UMNNMap(nodes=1)
    with pytest.raises(ValueError, match="signal"):
        clenshaw_curtis(3) and UMNNMap(signal=0)
