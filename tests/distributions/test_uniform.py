"""Tests of UniformBox: density inside and outside the box, samples, temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowkit.distributions import UniformBox


def test_log_prob_inside_outside_and_on_the_boundary():
    base = UniformBox(torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 0.5]), (2,))
    z = torch.tensor([[0.0, 0.25], [-1.0, 0.5], [3.01, 0.2], [0.0, -0.01]])
    expected = -math.log(4.0 * 0.5)
    log_prob = base.log_prob(z)
    assert log_prob[:2].tolist() == pytest.approx([expected, expected])
    assert log_prob[2:].tolist() == [-math.inf, -math.inf]


def test_scalar_bounds_broadcast_to_an_image_event():
    base = UniformBox(-2.0, 2.0, (3, 2, 2))
    log_prob = base.log_prob(torch.zeros(5, 3, 2, 2))
    assert log_prob.shape == (5,)
    assert log_prob[0].item() == pytest.approx(-12 * math.log(4.0))


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_samples_are_uniform_on_the_shrunk_box(temperature):
    torch.manual_seed(1)
    low, high = torch.tensor([-1.0, 2.0, 0.0]), torch.tensor([1.0, 5.0, 0.1])
    base = UniformBox(low, high, (3,))
    samples = base.sample(20_000, temperature=temperature)
    assert samples.shape == (20_000, 3)
    centre, half = (low + high) / 2, (high - low) / 2 * temperature
    for i in range(3):
        result = stats.kstest(
            samples[:, i].double().numpy(), stats.uniform(centre[i] - half[i], 2 * half[i]).cdf
        )
        assert result.pvalue > 1e-3
    assert torch.isfinite(base.log_prob(samples)).all()


def test_support_constraint_and_log_volume():
    base = UniformBox(0.0, torch.tensor([1.0, 2.0]), (2,))
    assert base.support.check(torch.tensor([[0.5, 1.5], [0.5, 2.5]])).tolist() == [True, False]
    assert base.log_volume().item() == pytest.approx(math.log(2.0))


def test_double_moves_samples():
    base = UniformBox(0.0, 1.0, (2,)).double()
    assert base.sample(3).dtype == torch.float64
    assert base.log_prob(torch.full((1, 2), 0.5, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_temperature_outside_unit_interval_raises(temperature):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        UniformBox(0.0, 1.0, (2,)).sample(3, temperature=temperature)


def test_low_must_be_below_high():
    with pytest.raises(ValueError, match=r"low < high.*index \(1,\)"):
        UniformBox(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), (2,))


def test_bounds_must_broadcast():
    with pytest.raises(ValueError, match=r"event shape \(2,\).*\(3,\)"):
        UniformBox(torch.zeros(3), 1.0, (2,))


def test_bounds_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        UniformBox(-np.inf, 1.0, (2,))
