"""FAB: its losses against their definitions, the replay buffer's arithmetic, a bimodal fit."""

from __future__ import annotations

import math

import torch

from flowkit.bijectors import Affine
from flowkit.distributions import Flow, StandardNormal
from flowkit.presets import realnvp_tabular
from flowkit.variational import (
    AISConfig,
    AnnealedImportanceSampler,
    PrioritisedReplayBuffer,
    ReplayBufferConfig,
    fab_loss,
    fab_replay_loss,
    fit,
    importance,
)
from flowkit.variational.targets import Gaussian, GaussianMixture
from tests.helpers import raises_with
from tests.variational.helpers import gaussian_flow, log_one_plus_chi_square

# q = N(0.3, 1.2^2) and p = N(-0.4, 0.9^2): p^2 / q is Gaussian (2 / 0.81 > 1 / 1.44).
MEAN_Q, SCALE_Q, MEAN_P, SCALE_P = 0.3, 1.2, -0.4, 0.9


def _exact_alpha_2_gradient(flow: Flow) -> list[torch.Tensor]:
    """Gradient of log E_q[(p / q)^2] in the flow's (log_scale, shift), in closed form."""
    log_scale, shift = (
        p.detach().clone().requires_grad_(True)
        for p in (flow.bijector.log_scale, flow.bijector.shift)
    )
    scale_q = torch.exp(-log_scale)
    value = log_one_plus_chi_square(
        -shift * scale_q,
        scale_q,
        torch.tensor([MEAN_P], dtype=torch.float64),
        torch.tensor([SCALE_P], dtype=torch.float64),
    )
    return list(torch.autograd.grad(value, [log_scale, shift]))


def test_fab_loss_gradient_is_the_alpha_2_gradient_on_samples_of_p_squared_over_q() -> None:
    flow = gaussian_flow([MEAN_Q], [SCALE_Q])
    parameters = [flow.bijector.log_scale, flow.bijector.shift]
    expected = _exact_alpha_2_gradient(flow)
    # Exact samples of p^2 / q, all of weight one.
    precision = 2 / SCALE_P**2 - 1 / SCALE_Q**2
    mean = (2 * MEAN_P / SCALE_P**2 - MEAN_Q / SCALE_Q**2) / precision
    noise = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = mean + noise / math.sqrt(precision)
    loss = fab_loss(flow.log_prob(x), torch.zeros(200_000, dtype=torch.float64))
    for got, want in zip(torch.autograd.grad(loss, parameters), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.01)
    # The same gradient from AIS chains towards p^2 / q and their weights.
    sampler = AnnealedImportanceSampler(
        flow, Gaussian([MEAN_P], [SCALE_P]), AISConfig(num_intermediate=8, step_size=0.8)
    )
    run = sampler.sample(20_000, power=2.0, generator=torch.Generator().manual_seed(1))
    loss = fab_loss(flow.log_prob(run.samples), run.log_weights)
    for got, want in zip(torch.autograd.grad(loss, parameters), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.03)


def test_replay_loss_weights_each_sample_by_q_old_over_q() -> None:
    log_q = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    log_q_old = torch.tensor([-1.0, -1.0, -2.5])
    ratio = torch.exp(log_q_old - log_q.detach())
    loss = fab_replay_loss(log_q, log_q_old)
    torch.testing.assert_close(loss, -(ratio * log_q.detach()).mean())
    (gradient,) = torch.autograd.grad(loss, log_q)
    torch.testing.assert_close(gradient, -ratio / 3)
    clipped = fab_replay_loss(log_q, log_q_old, max_adjustment=2.0)
    expected = -(ratio.clamp(max=2.0) * log_q.detach()).mean()
    torch.testing.assert_close(clipped, expected)


def test_buffer_draws_in_proportion_to_the_weights_without_replacement() -> None:
    buffer = PrioritisedReplayBuffer((1,), capacity=8, min_length=4, dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    buffer.add(torch.arange(4.0)[:, None], weights.log(), torch.zeros(4))
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.zeros(4)
    for _ in range(draws):
        counts[buffer.sample(1, generator=generator).indices] += 1
    expected = weights / weights.sum() * draws
    # Each count is binomial; five standard deviations at most.
    spread = (expected * (1 - weights / weights.sum())).sqrt()
    assert bool(((counts - expected).abs() < 5 * spread).all()), counts
    drawn = buffer.sample(4, generator=generator)
    assert sorted(drawn.indices.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(drawn.x[:, 0], drawn.indices.double())


def test_buffer_reweights_on_reuse_and_overwrites_the_oldest() -> None:
    buffer = PrioritisedReplayBuffer((2,), capacity=4, min_length=2, dtype=torch.float64)
    buffer.add(torch.zeros(3, 2), torch.tensor([0.5, 1.0, 1.5]), torch.tensor([-1.0, -2.0, -3.0]))
    assert len(buffer) == 3 and buffer.can_sample
    buffer.adjust(torch.tensor([0, 2]), torch.tensor([-1.5, math.nan], dtype=torch.float64))
    # w <- w q_old / q_new: 0.5 + (-1.0 - -1.5); a non-finite new log q is a zero weight.
    torch.testing.assert_close(
        buffer.log_weights[:3], torch.tensor([1.0, 1.0, -math.inf], dtype=torch.float64)
    )
    torch.testing.assert_close(
        buffer.log_q[:3], torch.tensor([-1.5, -2.0, -3.0], dtype=torch.float64)
    )
    buffer.add(torch.ones(2, 2), torch.tensor([7.0, 8.0]), torch.tensor([0.0, 0.0]))
    assert len(buffer) == 4 and buffer.next_index == 1
    torch.testing.assert_close(
        buffer.log_weights, torch.tensor([8.0, 1.0, -math.inf, 7.0], dtype=torch.float64)
    )
    raises_with(ValueError, lambda: buffer.sample(4), "only 3 of 4 have a non-zero weight")
    empty = PrioritisedReplayBuffer((2,), capacity=4, min_length=2)
    raises_with(ValueError, lambda: empty.sample(1), "holds 0 entries", "min_length 2")
    raises_with(
        ValueError,
        lambda: empty.add(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2)),
        "x of shape (n, *(2,))",
        "(2, 3)",
    )


# Two far-apart modes holding 30 % and 70 % of the mass; log Z = 0.
BIMODAL = GaussianMixture(
    torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), torch.tensor([0.5]), torch.tensor([0.3, 0.7])
)


def _left_fraction(objective: str, **settings: object) -> tuple[float, Flow]:
    flow = realnvp_tabular(
        2, transforms=4, hidden_features=(16, 16), normalization=None, seed=0
    ).double()
    result = fit(
        flow,
        BIMODAL,
        steps=100,
        batch_size=128,
        objective=objective,
        lr=5e-3,
        seed=0,
        progress=False,
        **settings,
    )  # type: ignore[arg-type]
    assert result.steps == 100 and result.skipped_steps == 0
    assert all(math.isfinite(loss) for loss in result.losses)
    with torch.no_grad():
        x = flow.sample(4000)
    return float((x[:, 0] < 0).double().mean()), flow


def test_fab_covers_both_modes_where_the_reverse_kl_collapses() -> None:
    ais = AISConfig(num_intermediate=2, step_size=0.5, leapfrog_steps=3)
    left, flow = _left_fraction("fab", ais=ais, buffer=ReplayBufferConfig())
    assert 0.15 < left < 0.45
    estimate = importance(flow, BIMODAL, 4000, seed=1)
    assert abs(estimate.log_z) < 0.1 and estimate.ess_fraction > 0.2
    collapsed, _ = _left_fraction("reverse_kl")
    assert collapsed < 0.02


def test_fab_without_a_buffer_steps_on_fresh_chains() -> None:
    flow = gaussian_flow([0.0], [1.0])
    target = Gaussian([1.0], [0.5])
    result = fit(
        flow,
        target,
        steps=150,
        batch_size=64,
        objective="fab",
        lr=0.05,
        seed=0,
        ais=AISConfig(num_intermediate=2, step_size=0.5),
        progress=False,
    )
    assert result.ess_fractions[0] < 0.8 < result.ess_fractions[-1]


def test_fab_bad_input_gives_one_clear_error() -> None:
    flow = gaussian_flow([0.0], [1.0])
    target = Gaussian([1.0], [0.5])
    run = dict(steps=2, batch_size=8, progress=False)
    raises_with(
        ValueError,
        lambda: fit(flow, target, ais=AISConfig(), **run),
        "settings of objective 'fab'",
        "'reverse_kl'",
    )
    raises_with(
        TypeError,
        lambda: fit(flow, target, objective="fab", ais={"step_size": 1}, **run),
        "ais as an AISConfig",
        "dict",
    )
    raises_with(
        ValueError,
        lambda: fit(flow, target, objective="fab", buffer=ReplayBufferConfig(min_length=16), **run),
        "min_length must hold the 4 batches of 8",
        "(32 samples), got 16",
    )
    raises_with(
        ValueError,
        lambda: fit(flow, Gaussian([0.0, 0.0], [1.0, 1.0]), objective="fab", **run),
        "2-dimensional",
    )

    def nan_target(x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1], math.nan, dtype=x.dtype)

    raises_with(ValueError, lambda: fit(flow, nan_target, objective="fab", **run), "NaN or +inf")
    conditional = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1), context_shape=(1,))
    raises_with(
        ValueError,
        lambda: fit(conditional, target, objective="fab", context=torch.zeros(1), **run),
        "unconditional flows only",
    )
