"""Importance sampling: log Z, its standard error, ESS and self-normalised expectations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.variational import expectation, importance
from flowkit.variational.targets import Gaussian
from tests.helpers import raises_with
from tests.variational.helpers import gaussian_flow


def test_flow_equal_to_target_gives_exact_log_z_and_full_ess() -> None:
    mean, scale = [0.5, -1.0, 2.0], [0.3, 1.7, 1.0]
    target = Gaussian(mean, scale)
    result = importance(gaussian_flow(mean, scale), target, 3000, batch_size=1000, seed=0)
    assert result.samples.shape == (3000, 3)
    assert result.ess_fraction == pytest.approx(1.0, abs=1e-12)
    assert result.ess == pytest.approx(3000, rel=1e-12)
    assert result.log_z == pytest.approx(target.log_z, abs=1e-12)
    assert result.log_z_std_error == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(result.weights, torch.full((3000,), 1 / 3000, dtype=torch.float64))


@given(
    dim=st.integers(1, 3),
    mean_p=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    scale_p=st.lists(st.floats(0.3, 3.0), min_size=3, max_size=3),
    shift=st.lists(st.floats(-0.5, 0.5), min_size=3, max_size=3),
    widen=st.lists(st.floats(1.1, 1.6), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_log_z_of_a_mismatched_proposal_is_within_a_few_standard_errors(
    dim: int,
    mean_p: list[float],
    scale_p: list[float],
    shift: list[float],
    widen: list[float],
    seed: int,
) -> None:
    # A proposal wider than the target keeps the weights' variance finite, so the delta method
    # applies; the proposal's mean is off by up to half a target standard deviation.
    mean_p, scale_p = mean_p[:dim], scale_p[:dim]
    mean_q = [m + s * d for m, s, d in zip(mean_p, scale_p, shift)]
    scale_q = [s * w for s, w in zip(scale_p, widen)]
    target = Gaussian(mean_p, scale_p)
    result = importance(gaussian_flow(mean_q, scale_q), target, 20_000, seed=seed)
    assert 0 < result.log_z_std_error < 0.05
    assert abs(result.log_z - target.log_z) < 5 * result.log_z_std_error
    assert 0 < result.ess_fraction < 1
    assert float(result.weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_standard_error_matches_the_spread_of_repeated_estimates() -> None:
    target = Gaussian([0.0, 0.0], [1.0, 1.0])
    flow = gaussian_flow([0.4, -0.3], [1.4, 1.2])
    runs = [importance(flow, target, 400, seed=seed) for seed in range(200)]
    estimates = torch.tensor([run.log_z for run in runs], dtype=torch.float64)
    reported = sum(run.log_z_std_error for run in runs) / len(runs)
    # With 200 repeats the sample standard deviation is known to about 5 %.
    assert float(estimates.std()) == pytest.approx(reported, rel=0.2)
    assert abs(float(estimates.mean()) - target.log_z) < 4 * float(estimates.std()) / math.sqrt(200)


def test_expectation_recovers_target_moments_from_a_mismatched_proposal() -> None:
    mean, scale = [1.0, -0.5], [0.5, 2.0]
    result = importance(
        gaussian_flow([0.7, 0.0], [0.9, 2.5]), Gaussian(mean, scale), 50_000, seed=1
    )
    first = expectation(lambda x: x, result)
    second = expectation(lambda x: x.square(), result)
    expected_second = torch.tensor([m**2 + s**2 for m, s in zip(mean, scale)], dtype=torch.float64)
    torch.testing.assert_close(first, torch.tensor(mean, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(second, expected_second, atol=0.0, rtol=0.05)
    assert expectation(lambda x: x[:, 0], result).shape == ()


def test_seed_reproduces_and_leaves_the_global_generator_alone() -> None:
    flow, target = gaussian_flow([0.0], [1.5]), Gaussian([0.0], [1.0])
    state = torch.random.get_rng_state()
    first = importance(flow, target, 100, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = importance(flow, target, 100, seed=3)
    assert torch.equal(first.samples, second.samples)
    assert not torch.equal(first.samples, importance(flow, target, 100, seed=4).samples)


def test_batches_cover_every_sample() -> None:
    result = importance(gaussian_flow([0.0], [2.0]), Gaussian([0.0], [1.0]), 1001, batch_size=100)
    assert result.samples.shape == (1001, 1) and result.log_weights.shape == (1001,)


def test_conditional_flow_gets_the_context_on_every_row() -> None:
    from flowkit.bijectors import Affine
    from flowkit.distributions import ConditionalDiagonalNormal, Flow
    from flowkit.nn import MLP

    base = ConditionalDiagonalNormal((2,), MLP(3, 4, (8,)), context_shape=(3,))
    flow = Flow(base, Affine(shape=(2,), event_rank=1))
    context = torch.tensor([1.0, 2.0, 3.0])
    seen = []

    def log_target(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows)
        return -0.5 * (x - rows[:, :2]).square().sum(-1)

    result = importance(flow, log_target, 50, batch_size=20, context=context)
    assert [tuple(rows.shape) for rows in seen] == [(20, 3), (20, 3), (10, 3)]
    assert all(bool((rows == context).all()) for rows in seen)
    assert math.isfinite(result.log_z)


def test_zero_density_samples_get_zero_weight() -> None:
    def half_plane(x: torch.Tensor) -> torch.Tensor:
        inside = -0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > 0, inside, torch.full_like(inside, -math.inf))

    result = importance(gaussian_flow([0.0], [1.0]), half_plane, 4000, seed=0)
    positive = result.samples[:, 0] > 0
    assert bool((result.weights[~positive] == 0).all())
    # Half the standard normal's mass: Z = sqrt(2 pi) / 2.
    assert abs(result.log_z - math.log(math.sqrt(2 * math.pi) / 2)) < 5 * result.log_z_std_error
    assert result.ess_fraction == pytest.approx(float(positive.double().mean()), rel=1e-9)


# --- bad input ------------------------------------------------------------------------------------
def _flow() -> object:
    return gaussian_flow([0.0, 0.0], [1.0, 1.0])


def test_target_returning_the_wrong_shape_is_named() -> None:
    raises_with(
        ValueError,
        lambda: importance(_flow(), lambda x: x, 10),
        "shape (10,)",
        "got shape (10, 2)",
    )


def test_target_returning_nan_is_named_with_the_point() -> None:
    def bad(x: torch.Tensor) -> torch.Tensor:
        value = -x.square().sum(-1)
        value[3] = math.nan
        return value

    raises_with(
        ValueError, lambda: importance(_flow(), bad, 10), "NaN or +inf for 1 of 10", "x = ["
    )


def test_target_returning_a_non_tensor_is_named() -> None:
    raises_with(TypeError, lambda: importance(_flow(), lambda x: 1.0, 10), "got float")


def test_flow_of_the_wrong_dimension_for_the_target() -> None:
    raises_with(
        ValueError,
        lambda: importance(_flow(), Gaussian([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), 10),
        "3-dimensional",
        "shape (2,)",
    )


def test_target_zero_everywhere_is_an_error() -> None:
    raises_with(
        ValueError,
        lambda: importance(_flow(), lambda x: torch.full(x.shape[:1], -math.inf), 10),
        "zero target density",
    )


def test_bad_arguments() -> None:
    target = Gaussian([0.0, 0.0], [1.0, 1.0])
    raises_with(ValueError, lambda: importance(_flow(), target, 0), "num_samples", "got 0")
    raises_with(TypeError, lambda: importance(_flow(), target, 10, batch_size=2.5), "batch_size")
    raises_with(TypeError, lambda: importance(object(), target, 10), "expects a flowkit Flow")
    raises_with(TypeError, lambda: importance(_flow(), "target", 10), "log_target as a callable")
    raises_with(
        ValueError,
        lambda: importance(_flow(), target, 10, context=torch.zeros(3)),
        "unconditional",
    )
    result = importance(_flow(), target, 10)
    raises_with(ValueError, lambda: expectation(lambda x: x.sum(), result), "shape (10, ...)")
    raises_with(TypeError, lambda: expectation(lambda x: x, "result"), "ImportanceResult")
