"""Annealed importance sampling: unbiased weights, exact weights when q = p, schedules, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from flowkit.bijectors import Affine
from flowkit.distributions import Flow, StandardNormal
from flowkit.variational import AISConfig, AnnealedImportanceSampler, ais
from flowkit.variational.targets import Gaussian
from tests.helpers import raises_with
from tests.variational.helpers import gaussian_flow

TRANSITIONS = ["hmc", "mala", "metropolis"]
MEAN, SCALE = [1.0, -0.5], [0.7, 1.5]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_flow_equal_to_target_gives_every_chain_the_exact_log_z(transition: str) -> None:
    target = Gaussian(MEAN, SCALE)
    config = AISConfig(num_intermediate=3, transition=transition, step_size=0.3)
    result = ais(gaussian_flow(MEAN, SCALE), target, 64, config, generator=_generator(0))
    expected = torch.full((64,), target.log_z, dtype=torch.float64)
    torch.testing.assert_close(result.log_weights, expected, rtol=0.0, atol=1e-12)
    # The chains moved: the transitions accepted proposals.
    assert float(result.acceptance.min()) > 0.1


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_weights_are_unbiased_for_z_on_a_mismatched_gaussian_pair(transition: str) -> None:
    target = Gaussian(MEAN, SCALE)
    config = AISConfig(num_intermediate=4, transition=transition, step_size=0.5, leapfrog_steps=3)
    result = ais(
        gaussian_flow([0.0, 0.0], [1.0, 1.0]), target, 4000, config, generator=_generator(1)
    )
    # log of the mean weight: the log-sum-exp estimate of log Z over all chains.
    estimate = float(torch.logsumexp(result.log_weights, 0)) - math.log(4000)
    assert estimate == pytest.approx(result.log_z, abs=1e-12)
    assert 0 < result.log_z_std_error < 0.1
    assert abs(estimate - target.log_z) < 4 * result.log_z_std_error


def test_more_intermediate_distributions_raise_the_effective_sample_size() -> None:
    target = Gaussian(MEAN, SCALE)
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    fractions = [
        ais(
            flow,
            target,
            2000,
            AISConfig(num_intermediate=count, step_size=0.5),
            generator=_generator(2),
        ).ess_fraction
        for count in (1, 16)
    ]
    assert fractions[1] > fractions[0] + 0.2
    # The flow's own weights, at the chains' starting points, are the same in both runs.
    flow_only = ais(flow, target, 2000, AISConfig(num_intermediate=1), generator=_generator(2))
    assert flow_only.flow_log_weights.shape == (2000,)


def test_a_generator_reproduces_a_run_and_leaves_the_global_generator_alone() -> None:
    target = Gaussian(MEAN, SCALE)
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    state = torch.random.get_rng_state()
    runs = [
        ais(flow, target, 32, AISConfig(num_intermediate=2), generator=_generator(3))
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)


def test_schedules_linear_geometric_and_given() -> None:
    linear = AISConfig(num_intermediate=3).betas_schedule()
    torch.testing.assert_close(
        linear, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    )
    geometric = AISConfig(num_intermediate=8, spacing="geometric").betas_schedule()
    assert geometric.shape == (10,) and geometric[0] == 0 and geometric[-1] == 1
    assert bool((geometric.diff() > 0).all())
    # A quarter (2) of the eight between 0 and 0.01, evenly; then a constant ratio up to 1.
    evenly = torch.tensor([0.0, 0.01 / 3, 0.02 / 3, 0.01], dtype=torch.float64)
    torch.testing.assert_close(geometric[:4], evenly)
    ratios = geometric[4:] / geometric[3:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 100 ** (1 / 6)))
    given = AISConfig(betas=[0.1, 0.9])
    assert given.intermediate_count == 2
    assert given.betas_schedule().tolist() == [0.0, 0.1, 0.9, 1.0]


def test_step_sizes_adapt_towards_the_target_acceptance() -> None:
    target = Gaussian(MEAN, SCALE)
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    large = AnnealedImportanceSampler(flow, target, AISConfig(step_size=20.0, num_intermediate=2))
    small = AnnealedImportanceSampler(flow, target, AISConfig(step_size=1e-3, num_intermediate=2))
    for sampler in (large, small):
        first = sampler.sample(64, generator=_generator(4))
        sampler.sample(64, generator=_generator(5))
        assert torch.equal(
            first.step_sizes, torch.full((2, 1), sampler.config.step_size, dtype=torch.float64)
        )
    torch.testing.assert_close(
        large.step_sizes, torch.full((2, 1), 20.0 / 1.05**2, dtype=torch.float64)
    )
    torch.testing.assert_close(
        small.step_sizes, torch.full((2, 1), 1e-3 * 1.05**2, dtype=torch.float64)
    )
    fixed = AnnealedImportanceSampler(
        flow, target, AISConfig(step_size=20.0, adapt_step_size=False)
    )
    fixed.sample(16, generator=_generator(6))
    assert float(fixed.step_sizes.max()) == 20.0


def _mean_acceptance(sampler: AnnealedImportanceSampler, runs: int) -> tuple[Tensor, Tensor]:
    """Each transition's acceptance in the first of ``runs`` runs and its mean over the last 10."""
    acceptance = [
        sampler.sample(256, generator=_generator(10 + run)).acceptance for run in range(runs)
    ]
    return acceptance[0], torch.stack(acceptance[-10:]).mean(0)


def test_proportional_adaptation_brings_the_acceptance_to_the_target_from_either_side() -> None:
    target = Gaussian(MEAN, SCALE)
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    for step_size in (20.0, 1e-2):
        proportional = AnnealedImportanceSampler(
            flow,
            target,
            AISConfig(num_intermediate=2, step_size=step_size, adaptation_rate=1.0),
        )
        first, last = _mean_acceptance(proportional, 30)
        # Far from the target at the start: nearly nothing or nearly everything accepted.
        assert float((first - 0.65).abs().min()) > 0.3, (step_size, first)
        # HMC's acceptance falls off a cliff near the leapfrog's stability limit, so single runs
        # scatter around the target; their mean settles on it.
        assert float((last - 0.65).abs().max()) < 0.1, (step_size, last)
        # FAB's rule (1.05 per run) from the same start is still far from the target: a step of
        # 20 / 1.05^29 = 4.9 accepts nothing, one of 0.01 * 1.05^29 = 0.04 nearly everything.
        fab_rule = AnnealedImportanceSampler(
            flow, target, AISConfig(num_intermediate=2, step_size=step_size)
        )
        assert float((_mean_acceptance(fab_rule, 30)[1] - 0.65).abs().min()) > 0.25


def test_proportional_adaptation_changes_a_step_by_at_most_a_factor_of_e_per_run() -> None:
    target = Gaussian(MEAN, SCALE)
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    config = AISConfig(num_intermediate=2, step_size=20.0, adaptation_rate=50.0)
    sampler = AnnealedImportanceSampler(flow, target, config)
    result = sampler.sample(64, generator=_generator(12))
    assert float(result.acceptance.max()) < 0.1
    torch.testing.assert_close(
        sampler.step_sizes, torch.full((2, 1), 20.0 / math.e, dtype=torch.float64)
    )
    # A small rate moves by rate * (acceptance - target) in log step size, uncapped.
    gentle = AnnealedImportanceSampler(
        flow, target, AISConfig(num_intermediate=2, step_size=20.0, adaptation_rate=0.1)
    )
    result = gentle.sample(64, generator=_generator(12))
    expected = 20.0 * torch.exp(0.1 * (result.acceptance - 0.65))
    torch.testing.assert_close(gentle.step_sizes, expected)


def test_power_two_targets_p_squared_over_q() -> None:
    # With q = N(0, 1) and p~ = N(0, 1) unnormalised, p~^2 / q integrates to Z^2 / Z * ... in
    # closed form: exp(-x^2) / N(x; 0, 1) = sqrt(2 pi) exp(-x^2 / 2), whose integral is 2 pi.
    flow = gaussian_flow([0.0], [1.0])
    sampler = AnnealedImportanceSampler(flow, Gaussian([0.0], [1.0]), AISConfig(num_intermediate=2))
    result = sampler.sample(16, power=2.0, generator=_generator(7))
    torch.testing.assert_close(
        result.log_weights, torch.full((16,), math.log(2 * math.pi), dtype=torch.float64)
    )


def test_bad_input_gives_one_clear_error() -> None:
    flow = gaussian_flow([0.0, 0.0], [1.0, 1.0])
    raises_with(
        ValueError, lambda: AISConfig(betas=[0.5, 0.2]), "strictly increasing", "[0.5, 0.2]"
    )
    raises_with(
        ValueError, lambda: AISConfig(betas=[0.5], num_intermediate=2), "num_intermediate (2)"
    )
    raises_with(ValueError, lambda: AISConfig(transition="gibbs"), "transition in", "'gibbs'")
    raises_with(ValueError, lambda: AISConfig(step_size=0.0), "step_size", "got 0.0")
    raises_with(ValueError, lambda: AISConfig(adaptation_rate=-1.0), "adaptation_rate", "got -1.0")
    raises_with(ValueError, lambda: ais(flow, Gaussian([0.0], [1.0]), 8), "1-dimensional")

    def nan_target(x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1], math.nan, dtype=x.dtype)

    raises_with(ValueError, lambda: ais(flow, nan_target, 8), "NaN or +inf")

    def detached_target(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.detach().square().sum(-1)

    raises_with(ValueError, lambda: ais(flow, detached_target, 8), "transition='metropolis'")
    # The gradient-free transition takes it.
    assert ais(flow, detached_target, 8, AISConfig(transition="metropolis")).samples.shape == (8, 2)
    conditional = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1), context_shape=(1,))
    raises_with(ValueError, lambda: ais(conditional, Gaussian(MEAN, SCALE), 8), "unconditional")
