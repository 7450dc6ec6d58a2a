"""The learning-rate schedule as a function of the step, and the optimizers TrainConfig names."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.train import TrainConfig
from flowkit.train.config import ConfigError
from flowkit.train.schedule import LearningRateSchedule, build_optimizer, horizon

DECAYS = ("constant", "cosine", "linear")

rates = st.floats(1e-6, 1.0)
ratios = st.floats(0.0, 1.0)


@st.composite
def schedules(draw, decays=DECAYS):
    warmup = draw(st.integers(0, 40) | st.floats(0.0, 40.0))
    total = draw(st.integers(1, 200))
    return LearningRateSchedule(
        draw(rates),
        warmup_steps=warmup,
        total_steps=total,
        decay=draw(st.sampled_from(decays)),
        min_lr_ratio=draw(ratios),
    )


@given(schedules(), st.data())
def test_the_warm_up_rises_linearly_from_zero_to_the_peak(schedule, data):
    warmup = max(1.0, schedule.warmup_steps)
    step = data.draw(st.integers(1, math.floor(warmup)))
    # On the line through 0 at step 0 and the peak at step W.
    assert schedule(step) == pytest.approx(schedule.lr * step / warmup, rel=1e-12)
    if step + 1 <= warmup:
        assert schedule(step + 1) > schedule(step)


@given(schedules())
def test_the_rate_rises_then_falls_and_stays_between_the_floor_and_the_peak(schedule):
    warmup = max(1.0, schedule.warmup_steps)
    steps = range(1, schedule.total_steps + 1)
    values = [schedule(step) for step in steps]
    rising = [value for step, value in zip(steps, values) if step <= warmup]
    falling = [value for step, value in zip(steps, values) if step >= warmup]
    assert all(a <= b for a, b in zip(rising, rising[1:]))
    assert all(a >= b for a, b in zip(falling, falling[1:]))
    after = [value for step, value in zip(steps, values) if step > warmup]
    floor = schedule.lr * (1.0 if schedule.decay == "constant" else schedule.min_lr_ratio)
    assert all(floor * (1 - 1e-12) <= value <= schedule.lr for value in after)


@given(
    rates,
    st.integers(1, 30),
    st.integers(2, 100),
    ratios,
    st.sampled_from(["cosine", "linear"]),
)
def test_a_decay_runs_from_the_peak_at_the_warm_up_end_to_the_floor_at_the_last_step(
    lr, warmup, length, ratio, decay
):
    total = warmup + length
    schedule = LearningRateSchedule(
        lr, warmup_steps=warmup, total_steps=total, decay=decay, min_lr_ratio=ratio
    )
    assert schedule(warmup) == lr
    assert schedule(total) == pytest.approx(lr * ratio, rel=1e-12, abs=1e-300)
    # Half-way through the decay both kinds stand at the middle of the peak and the floor.
    if length % 2 == 0:
        middle = schedule(warmup + length // 2)
        assert middle == pytest.approx(lr * (1 + ratio) / 2, rel=1e-12)
    # The cosine starts and ends flat, the line does not.
    first, last = schedule(warmup) - schedule(warmup + 1), schedule(total - 1) - schedule(total)
    step = lr * (1 - ratio) / length
    if decay == "linear":
        assert first == pytest.approx(step, rel=1e-9) and last == pytest.approx(step, rel=1e-9)
    elif ratio < 0.99 and length >= 4:
        assert first < step and last < step


@given(schedules())
def test_a_floor_of_one_is_the_constant_schedule(schedule):
    flat = LearningRateSchedule(
        schedule.lr,
        warmup_steps=schedule.warmup_steps,
        total_steps=schedule.total_steps,
        decay=schedule.decay,
        min_lr_ratio=1.0,
    )
    constant = LearningRateSchedule(
        schedule.lr, warmup_steps=schedule.warmup_steps, total_steps=schedule.total_steps
    )
    for step in range(1, schedule.total_steps + 1):
        assert flat(step) == pytest.approx(constant(step), rel=1e-12)


@pytest.mark.parametrize("warmup_epochs", [0.0, 0.5, 2.56, 10.0])
def test_a_constant_schedule_gives_the_former_lambda_lr_rates_bit_for_bit(warmup_epochs):
    # The trainer formerly drove a LambdaLR with min(1, (k + 1) / W) after k applied steps.
    steps_per_epoch, lr = 7, 3e-4
    config = TrainConfig(lr=lr, warmup_epochs=warmup_epochs, epochs=20)
    schedule = LearningRateSchedule.from_config(config, steps_per_epoch)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=lr)
    warmup = max(1.0, warmup_epochs * steps_per_epoch)
    former = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup)
    )
    for step in range(1, 20 * steps_per_epoch + 1):
        assert schedule(step) == optimizer.param_groups[0]["lr"], step
        optimizer.step()  # no gradient: moves nothing
        former.step()


def test_warm_up_in_steps_or_epochs_and_the_horizon():
    config = TrainConfig(warmup_steps=30, lr_decay="cosine", epochs=4)
    assert config.warmup_epochs == 0.0
    assert LearningRateSchedule.from_config(config, 25).warmup_steps == 30
    assert TrainConfig().warmup_epochs == 10.0
    by_epochs = TrainConfig(warmup_epochs=1.5, epochs=4)
    assert LearningRateSchedule.from_config(by_epochs, 10).warmup_steps == 15
    assert horizon(config, 25) == 100
    assert horizon(TrainConfig(epochs=4, max_steps=60), 25) == 60
    assert horizon(TrainConfig(epochs=4, max_steps=600), 25) == 100
    with pytest.raises(ConfigError, match=r"warmup_epochs or warmup_steps, got both"):
        TrainConfig(warmup_epochs=1.0, warmup_steps=10)
    with pytest.raises(ConfigError, match=r"lr_decay in \('constant', 'cosine', 'linear'\)"):
        TrainConfig(lr_decay="exponential")
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)
    with pytest.raises(ConfigError, match="beta2"):
        TrainConfig(beta2=1.0)
    with pytest.raises(ValueError, match="step as an int >= 1, got 0"):
        LearningRateSchedule(1e-3)(0)


@pytest.mark.parametrize("optimizer", ["adam", "adamax"])
def test_weight_decay_with_adam_or_adamax_is_refused_naming_adamw(optimizer):
    expected = f"weight_decay=0.0001 with optimizer '{optimizer}' would be an L2 penalty.*adamw"
    with pytest.raises(ConfigError, match=expected):
        TrainConfig(optimizer=optimizer, weight_decay=1e-4)


def test_adamw_decay_is_decoupled_from_the_gradient():
    config = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1, beta2=0.95)
    weights = torch.nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(0)))
    before = weights.detach().clone()
    optimizer = build_optimizer([weights], config, steps_per_epoch=10)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    weights.grad = torch.zeros_like(weights)
    optimizer.step()
    # A zero gradient moves nothing; the decay alone shrinks each weight by lr * weight_decay.
    assert torch.equal(weights.detach(), before * (1 - 0.01 * 0.1))
    # An L2 penalty would instead enter the gradient and move the weights by about lr each.
    l2 = torch.nn.Parameter(before.clone())
    l2.grad = torch.zeros_like(l2)
    torch.optim.Adam([l2], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1).step()
    assert not torch.allclose(l2.detach(), weights.detach(), rtol=0, atol=1e-3)


def test_beta2_defaults_to_the_polyak_rule():
    weights = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([weights], TrainConfig(polyak_epochs=2.0), steps_per_epoch=50)
    assert optimizer.param_groups[0]["betas"] == (0.9, 1 - 1 / 100)
    assert type(optimizer) is torch.optim.Adamax
