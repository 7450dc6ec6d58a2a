"""The piecewise-linear, -quadratic, -cubic and circular spline maps, for any raw parameters."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.bijectors import (
    CircularSplineMap,
    CubicSplineMap,
    LinearSplineMap,
    QuadraticSplineMap,
    SplineMap,
    spline_map,
)
from flowkit.bijectors._piecewise_spline import wrap_angle

BOUND = 2.0
INTERVAL_MAPS = {
    "linear": lambda bins: LinearSplineMap(bins=bins, tail_bound=BOUND),
    "quadratic": lambda bins: QuadraticSplineMap(bins=bins, tail_bound=BOUND),
    "cubic": lambda bins: CubicSplineMap(bins=bins, tail_bound=BOUND),
    "rational_quadratic": lambda bins: SplineMap(bins=bins, tail_bound=BOUND),
}


def raw_parameters(spline, seed: int, scale: float, count: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (count, spline.params_per_element)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


parameters = dict(bins=st.integers(2, 9), seed=st.integers(0, 2**16), scale=st.floats(0.0, 4.0))


@pytest.mark.parametrize("kind", sorted(INTERVAL_MAPS))
@settings(max_examples=15, deadline=None)
@given(**parameters)
def test_interval_maps_are_increasing_bijections_of_the_interval(
    kind: str, bins: int, seed: int, scale: float
) -> None:
    spline = INTERVAL_MAPS[kind](bins)
    raw = raw_parameters(spline, seed, scale)
    # Random points between the bounds: the linear map's derivative jumps at its (equally
    # spaced) knots, where the one-sided derivatives of the map and of its inverse differ.
    generator = torch.Generator().manual_seed(seed)
    middle = torch.rand(3999, generator=generator, dtype=torch.float64).sort().values
    x = torch.cat(
        [torch.tensor([-BOUND]).double(), (2 * middle - 1) * BOUND, torch.tensor([BOUND]).double()]
    )
    x = x.unsqueeze(-1)
    y, log_derivative = spline(x, (raw,))
    assert bool((y.diff(dim=0) > 0).all()), "not strictly increasing"
    torch.testing.assert_close(y[[0, -1]], x[[0, -1]], atol=1e-12, rtol=0)
    assert bool(torch.isfinite(log_derivative).all())
    x_back, inverse_log_derivative = spline.inverse(y, (raw,))
    torch.testing.assert_close(x_back, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, atol=1e-7, rtol=0)


@pytest.mark.parametrize("kind", sorted(INTERVAL_MAPS))
@settings(max_examples=10, deadline=None)
@given(**parameters)
def test_log_derivative_matches_autograd(kind: str, bins: int, seed: int, scale: float) -> None:
    spline = INTERVAL_MAPS[kind](bins)
    raw = raw_parameters(spline, seed, scale, count=64)
    generator = torch.Generator().manual_seed(seed)
    # Inside, on both tails, and the bounds themselves.
    x = torch.cat(
        [
            torch.rand(60, generator=generator, dtype=torch.float64) * 6 - 3,
            torch.tensor([-BOUND, BOUND, -5.0, 5.0], dtype=torch.float64),
        ]
    )
    x.requires_grad_(True)
    y, log_derivative = spline(x, (raw,))
    (gradient,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, gradient.log(), atol=1e-9, rtol=1e-9)
    # The inverse's gradient flows too (the cubic one through its implicit Newton step).
    y = y.detach().requires_grad_(True)
    x_back, inverse_log_derivative = spline.inverse(y, (raw,))
    (gradient,) = torch.autograd.grad(x_back.sum(), y)
    torch.testing.assert_close(inverse_log_derivative, gradient.log(), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("kind", sorted(INTERVAL_MAPS))
def test_identity_tails_and_zero_parameters(kind: str) -> None:
    spline = INTERVAL_MAPS[kind](5)
    raw = raw_parameters(spline, 3, 2.0, count=4)
    outside = torch.tensor([-7.0, -2.5, 2.5, 40.0], dtype=torch.float64)
    y, log_derivative = spline(outside, (raw,))
    assert torch.equal(y, outside) and torch.equal(log_derivative, torch.zeros(4).double())
    inside = torch.tensor([-1.5, -0.2, 0.3, 1.9], dtype=torch.float64)
    y, log_derivative = spline(inside, (torch.zeros_like(raw),))
    torch.testing.assert_close(y, inside, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_derivative, torch.zeros(4).double(), atol=1e-12, rtol=0)


def test_cubic_inverse_in_float32_within_its_tolerance() -> None:
    spline = CubicSplineMap(bins=6, tail_bound=BOUND)
    raw = raw_parameters(spline, 7, 1.5, count=2000).float()
    x = torch.rand(2000) * 2 * BOUND - BOUND
    y, _ = spline(x, (raw,))
    x_back, _ = spline.inverse(y, (raw,))
    assert float((x_back - x).abs().max()) < 1e-4


@settings(max_examples=15, deadline=None)
@given(**parameters)
def test_circular_map_is_a_smooth_bijection_of_the_circle(
    bins: int, seed: int, scale: float
) -> None:
    spline = CircularSplineMap(bins=bins)
    raw = raw_parameters(spline, seed, scale)
    x = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)[:-1].unsqueeze(-1)
    y, log_derivative = spline(x, (raw,))
    assert bool(((y >= -math.pi) & (y < math.pi)).all())
    # Increasing around the circle: every step forward, exactly one wrap-around in all.
    steps = torch.remainder(y.diff(dim=0), 2 * math.pi)
    assert bool((steps > 0).all())
    turn = steps.sum() + torch.remainder(y[0] - y[-1], 2 * math.pi)
    torch.testing.assert_close(turn, torch.tensor([2 * math.pi]).double())
    x_back, inverse_log_derivative = spline.inverse(y, (raw,))
    # Compared on the circle: -pi may come back as pi less an ulp.
    error = torch.remainder(x_back - x + math.pi, 2 * math.pi) - math.pi
    assert float(error.abs().max()) < 1e-9
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, atol=1e-7, rtol=0)
    # Periodic: f(-pi) = f(pi) mod 2 pi, and the derivative is continuous across the boundary.
    ends = torch.tensor([[-math.pi], [math.pi]], dtype=torch.float64)
    at_ends, _ = spline(ends, (raw,))
    assert float(torch.remainder(at_ends[1] - at_ends[0], 2 * math.pi)) in (0.0, 2 * math.pi)
    epsilon = 1e-10
    near = torch.tensor([[math.pi - epsilon], [-math.pi + epsilon]], dtype=torch.float64)
    near.requires_grad_(True)
    values, near_log_derivative = spline(near, (raw,))
    (gradient,) = torch.autograd.grad(values.sum(), near)
    torch.testing.assert_close(near_log_derivative, gradient.log(), atol=1e-9, rtol=0)
    assert abs(float(near_log_derivative[0] - near_log_derivative[1])) < 1e-5


def test_circular_rotation_wraps() -> None:
    spline = CircularSplineMap(bins=4)
    raw = torch.zeros(1, 13, dtype=torch.float64)
    raw[:, -1] = 1.0
    y, log_derivative = spline(torch.tensor([3.0], dtype=torch.float64), (raw,))
    torch.testing.assert_close(y, torch.tensor([4.0 - 2 * math.pi], dtype=torch.float64))
    assert float(log_derivative) == 0.0
    # Inputs a turn away map alike.
    shifted, _ = spline(torch.tensor([3.0 - 2 * math.pi], dtype=torch.float64), (raw,))
    torch.testing.assert_close(shifted, y)


def test_wrap_angle_keeps_angles_and_wraps_the_rest() -> None:
    angles = torch.tensor([-math.pi, -1.0, 0.1, math.pi - 1e-12], dtype=torch.float64)
    assert torch.equal(wrap_angle(angles), angles)
    wrapped = wrap_angle(torch.tensor([math.pi, 7.0, -4.0], dtype=torch.float64))
    expected = torch.tensor([-math.pi, 7.0 - 2 * math.pi, 2 * math.pi - 4.0]).double()
    torch.testing.assert_close(wrapped, expected)


def test_spline_map_names_its_kinds() -> None:
    assert isinstance(spline_map("quadratic", bins=3), QuadraticSplineMap)
    assert spline_map("linear", bins=3).params_per_element == 3
    with pytest.raises(ValueError, match=r"kind in \('rational_quadratic'.*got 'bezier'"):
        spline_map("bezier")
    with pytest.raises(ValueError, match="bins >= 2"):
        CubicSplineMap(bins=1)
