"""Circular bases: normalised on the circle, samples in [-pi, pi), errors that name the values."""

from __future__ import annotations

import math

import pytest
import torch

from flowkit.distributions import CircularUniform, VonMises

# Midpoints of a fine grid on the circle: the trapezoid rule of a periodic smooth function.
GRID = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000 * 2 * math.pi - math.pi


@pytest.mark.parametrize("concentration", [0.05, 1.0, 7.5, 400.0])
def test_von_mises_integrates_to_one(concentration: float) -> None:
    base = VonMises((1,), loc=2.5, concentration=concentration).double()
    density = base.log_prob(GRID.unsqueeze(-1)).exp()
    total = float(density.sum() * (2 * math.pi / len(GRID)))
    assert abs(total - 1.0) < 1e-6


def test_von_mises_matches_the_bessel_function() -> None:
    # mpmath's I0 to 30 digits: log I0(900) is where i0 itself overflows float32 (and scipy's
    # logpdf loses six digits).
    import mpmath

    loc = torch.tensor([0.25, -2.0, 3.0], dtype=torch.float64)
    kappa = torch.tensor([0.5, 4.0, 900.0], dtype=torch.float64)
    base = VonMises((3,), loc=loc, concentration=kappa).double()
    z = torch.tensor([[0.1, -1.5, -3.1], [3.0, 2.0, 3.05]], dtype=torch.float64)
    with mpmath.workdps(30):
        expected = [
            sum(
                float(k * mpmath.cos(value - m) - mpmath.log(2 * mpmath.pi * mpmath.besseli(0, k)))
                # The parameters as the distribution holds them (made in float32).
                for value, m, k in zip(row.tolist(), base.loc.tolist(), base.concentration.tolist())
            )
            for row in z
        ]
    torch.testing.assert_close(
        base.log_prob(z), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-10
    )


def test_von_mises_samples_and_temperature() -> None:
    torch.manual_seed(0)
    base = VonMises((2,), loc=torch.tensor([3.0, -1.0]), concentration=torch.tensor([20.0, 20.0]))
    samples = base.sample(4000)
    assert samples.shape == (4000, 2)
    assert bool(((samples >= -math.pi) & (samples < math.pi)).all())
    mean_direction = torch.atan2(samples.sin().mean(0), samples.cos().mean(0))
    torch.testing.assert_close(mean_direction, torch.tensor([3.0, -1.0]), atol=0.02, rtol=0)
    colder = base.sample(4000, temperature=0.5)
    spread = 1 - samples.cos().sub(0).mul(1).mean()
    assert float(1 - (colder - base.loc).cos().mean()) < float(
        1 - (samples - base.loc).cos().mean()
    )
    assert spread.isfinite()


def test_learnable_von_mises_trains_its_parameters() -> None:
    base = VonMises((1,), learnable=True)
    assert {name for name, _ in base.named_parameters()} == {"loc", "log_concentration"}
    base.log_prob(torch.tensor([[1.0]])).sum().backward()
    assert base.loc.grad is not None and base.log_concentration.grad is not None


def test_circular_uniform() -> None:
    base = CircularUniform((2,)).double()
    z = torch.tensor([[-math.pi, 0.0], [math.pi, 0.0], [0.0, 3.0]], dtype=torch.float64)
    expected = torch.tensor([-2 * math.log(2 * math.pi), -math.inf, -2 * math.log(2 * math.pi)])
    torch.testing.assert_close(base.log_prob(z), expected.double())
    samples = base.sample((100, 3))
    assert samples.shape == (100, 3, 2) and samples.dtype == torch.float64
    assert bool(((samples >= -math.pi) & (samples < math.pi)).all())
    assert bool(base.support.check(samples).all())


def test_errors_name_the_values() -> None:
    with pytest.raises(ValueError, match=r"positive finite concentration, got \[1.0, -2.0\]"):
        VonMises((2,), concentration=torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match=r"broadcast to the event shape \(2,\), got shapes \(3,\)"):
        VonMises((2,), loc=torch.zeros(3))
    with pytest.raises(ValueError, match="only at temperature 1, got 0.5"):
        CircularUniform((1,)).sample(3, temperature=0.5)
    with pytest.raises(ValueError, match=r"event shape"):
        VonMises((2,)).log_prob(torch.zeros(4, 3))
