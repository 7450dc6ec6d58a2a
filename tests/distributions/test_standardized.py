"""StandardizedFlow: float64 statistics in front of a flow of any precision."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit
from flowkit.distributions.standardized import StandardizedFlow


def _gaussian_log_prob(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """log N(x; mean, diag(std^2)) in float64, the density of an identity flow behind scaling."""
    mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    z = (x.double() - mean_t) / std_t
    return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - std_t.log()).sum(-1)


def _identity_flow(features: int) -> flowkit.Flow:
    # NSF's output layers start at zero: the flow starts as the identity map.
    return flowkit.presets.nsf(features, transforms=1, hidden_features=(8,))


def test_a_float32_model_scores_a_large_offset_column_in_float64():
    mean, std = [1e9, -3.0], [1e-3, 2.0]
    flow = StandardizedFlow(_identity_flow(2), mean, std).to(torch.float32)
    # Moving the model to float32 rounds neither the statistics nor the data.
    assert flow.mean.dtype == torch.float64 and flow.log_std_sum.dtype == torch.float32
    x = torch.tensor([[1e9 + 2e-3, -1.0], [1e9 - 5e-4, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        got = flow.log_prob(x)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), _gaussian_log_prob(x, mean, std), atol=1e-4)
    # The same rows cast to float32 first lose the variation (1e9 + 2e-3 is 1e9 in float32).
    with torch.no_grad():
        rounded = flow.log_prob(x.float())
    assert not torch.allclose(rounded.double(), _gaussian_log_prob(x, mean, std), atol=1.0)


def test_samples_come_back_in_the_data_units_and_score_alike():
    torch.manual_seed(0)
    flow = StandardizedFlow(_identity_flow(2), [1e9, 5.0], [1e-3, 2.0])
    with torch.no_grad():
        rows, log_prob = flow.sample_and_log_prob(2000)
        again = flow.log_prob(rows)
    assert rows.dtype == torch.float64
    assert (rows[:, 0] - 1e9).std().item() == pytest.approx(1e-3, rel=0.1)
    assert rows[:, 1].mean().item() == pytest.approx(5.0, abs=0.2)
    # float64 resolves 1e9 to 1.2e-7, a ten-thousandth of the column's spread.
    assert torch.allclose(log_prob, again, atol=1e-3)


def test_a_conditional_flow_standardises_its_context():
    inner = flowkit.presets.nsf(2, context_features=1, transforms=1, hidden_features=(8,))
    torch.nn.init.normal_(inner.bijector.bijectors[0].conditioner.network[-1].weight)
    flow = StandardizedFlow(inner, [0.0, 0.0], [1.0, 1.0], [100.0], [10.0])
    x = torch.randn(5, 2)
    with torch.no_grad():
        assert torch.allclose(
            flow.log_prob(x, torch.full((5, 1), 110.0)), inner.log_prob(x, torch.ones(5, 1))
        )


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [([0.0], [1.0], "statistics of shapes"), ([0.0, 0.0], [1.0, 0.0], "positive finite std")],
)
def test_bad_statistics_are_named(mean, std, match):
    with pytest.raises(ValueError, match=match):
        StandardizedFlow(_identity_flow(2), mean, std)
