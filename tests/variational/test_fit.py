"""fit: each objective fits a Gaussian target; non-finite steps; bad input."""

from __future__ import annotations

import math
import time

import pytest
import torch

from flowkit.bijectors import Affine, Compose, LULinear
from flowkit.distributions import Flow, StandardNormal
from flowkit.variational import NonFiniteFitError, fit, importance
from flowkit.variational.targets import Gaussian
from tests.helpers import raises_with
from tests.variational.helpers import gaussian_flow

# A correlated 2-D Gaussian, normalised (log Z = 0).
COVARIANCE = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
TARGET = torch.distributions.MultivariateNormal(MEAN, COVARIANCE)


def _small_flow() -> Flow:
    bijector = Compose(LULinear(2, seed=0), Affine(shape=(2,), event_rank=1))
    return Flow(StandardNormal((2,)), bijector).double()


@pytest.mark.parametrize(
    ("objective", "path_gradient"),
    [("reverse_kl", False), ("reverse_kl", True), ("alpha_2", False), ("forward_kl", False)],
    ids=["reverse_kl", "path_gradient", "alpha_2", "forward_kl"],
)
def test_a_small_flow_fits_a_correlated_gaussian(objective: str, path_gradient: bool) -> None:
    flow = _small_flow()
    samples = TARGET.sample((4096,)) if objective == "forward_kl" else None
    result = fit(
        flow,
        TARGET.log_prob,
        steps=300,
        batch_size=128,
        objective=objective,
        lr=0.03,
        target_samples=samples,
        path_gradient=path_gradient,
        seed=0,
        progress=False,
    )
    assert result.steps == 300 and result.skipped_steps == 0
    assert len(result.losses) == len(result.ess_fractions) == len(result.seconds) == 300
    assert result.ess_fractions[0] < 0.5
    check = importance(flow, TARGET.log_prob, 4000, seed=1)
    assert check.ess_fraction > 0.9
    assert abs(check.log_z) < 5 * check.log_z_std_error + 1e-3


def test_seed_reproduces_a_fit_and_leaves_the_global_generator_alone() -> None:
    target = Gaussian([1.0], [0.5])
    state = torch.random.get_rng_state()
    runs = [
        fit(gaussian_flow([0.0], [1.0]), target, steps=5, batch_size=8, seed=7, progress=False)
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert runs[0].losses == runs[1].losses


def test_max_seconds_stops_at_the_step_that_passes_it() -> None:
    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return -0.5 * x.square().sum(-1)

    result = fit(
        gaussian_flow([0.0], [1.0]), slow, steps=1000, batch_size=4, max_seconds=0.1, progress=False
    )
    # Every step sleeps 0.02 s, so at most 5 fit in 0.1 s; the one that passes 0.1 s is the last.
    assert 1 <= result.steps <= 6
    assert len(result.losses) == len(result.seconds) == result.steps
    assert result.seconds[-1] >= 0.1 and all(t < 0.1 for t in result.seconds[:-1])


def test_progress_bar_shows_loss_and_ess(capsys: pytest.CaptureFixture[str]) -> None:
    fit(gaussian_flow([0.0], [1.0]), Gaussian([0.0], [2.0]), steps=3, batch_size=4, seed=0)
    err = capsys.readouterr().err
    assert "fit (reverse_kl)" in err and "ess=" in err


class _NaNAfter:
    """Gaussian log-density that returns NaN from the ``start``-th call on, ``count`` times."""

    def __init__(self, start: int, count: int) -> None:
        self.calls, self.start, self.count = 0, start, count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = -0.5 * x.square().sum(-1)
        if self.start <= self.calls < self.start + self.count:
            value = value.clone()
            value[0] = math.nan
        return value


def test_a_nan_step_is_skipped_and_training_goes_on() -> None:
    flow = gaussian_flow([1.0], [2.0])
    with pytest.warns(
        RuntimeWarning, match="step 3: log_target returned NaN or \\+inf for 1 of 16"
    ) as caught:
        result = fit(flow, _NaNAfter(3, 1), steps=6, batch_size=16, seed=0, progress=False)
    # The warning points at the line that called fit.
    assert [warning.filename for warning in caught] == [__file__]
    assert result.skipped_steps == 1
    assert math.isnan(result.losses[2])
    assert all(math.isfinite(loss) for i, loss in enumerate(result.losses) if i != 2)


def test_consecutive_nan_steps_stop_with_the_cause_and_keep_the_last_finite_parameters() -> None:
    flow = gaussian_flow([1.0], [2.0])
    target = _NaNAfter(3, 100)
    fit(flow, _NaNAfter(3, 0), steps=2, batch_size=16, seed=0, progress=False)
    expected = {name: p.detach().clone() for name, p in flow.named_parameters()}
    flow = gaussian_flow([1.0], [2.0])
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteFitError) as caught:
        fit(flow, target, steps=50, batch_size=16, seed=0, progress=False, max_nonfinite=4)
    message = str(caught.value)
    assert "4 consecutive steps" in message and "step 6" in message
    assert "log_target returned NaN" in message
    for name, parameter in flow.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name], rtol=0, atol=0)


def test_zero_density_steps_are_named() -> None:
    def nowhere(x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1], -math.inf, dtype=x.dtype)

    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteFitError, match="-inf"):
        fit(
            gaussian_flow([0.0], [1.0]),
            nowhere,
            steps=5,
            batch_size=4,
            progress=False,
            max_nonfinite=2,
        )


def test_alpha_2_takes_zero_density_as_zero_weight() -> None:
    # A standard normal cut to x > 0: reverse KL is infinite at any sample below 0, alpha = 2
    # only gives such samples no weight; the fit moves the flow onto the half line.
    def half_normal(x: torch.Tensor) -> torch.Tensor:
        inside = -0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > 0, inside, torch.full_like(inside, -math.inf))

    flow = gaussian_flow([0.5], [1.0])
    result = fit(
        flow,
        half_normal,
        steps=150,
        batch_size=128,
        objective="alpha_2",
        lr=0.02,
        seed=0,
        progress=False,
    )
    assert result.skipped_steps == 0
    assert result.ess_fractions[-1] > result.ess_fractions[0]


def test_conditional_fit_draws_context_rows_for_the_target() -> None:
    from flowkit.distributions import ConditionalDiagonalNormal
    from flowkit.nn import MLP

    base = ConditionalDiagonalNormal((1,), MLP(1, 2, (16,)), context_shape=(1,))
    flow = Flow(base, Affine(shape=(1,), event_rank=1)).double()
    contexts = torch.tensor([[-2.0], [0.0], [2.0]], dtype=torch.float64)
    seen: list[torch.Tensor] = []

    def log_target(x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        seen.append(context)
        return -0.5 * (x - context).square().sum(-1)

    result = fit(
        flow,
        log_target,
        steps=200,
        batch_size=64,
        lr=0.02,
        context=contexts,
        seed=0,
        progress=False,
    )
    assert all(tuple(rows.shape) == (64, 1) for rows in seen)
    assert set(torch.cat(seen).flatten().tolist()) == {-2.0, 0.0, 2.0}
    assert result.ess_fractions[-1] > 0.8 > result.ess_fractions[0]


# --- bad input ------------------------------------------------------------------------------------
def _call(**changes: object) -> object:
    arguments: dict = {"steps": 2, "batch_size": 8, "progress": False}
    arguments.update(changes)
    flow = arguments.pop("flow", gaussian_flow([0.0, 0.0], [1.0, 1.0]))
    target = arguments.pop("target", Gaussian([0.0, 0.0], [1.0, 1.0]))
    return fit(flow, target, **arguments)


def test_target_nan_at_the_first_call_is_a_clear_error() -> None:
    raises_with(
        ValueError,
        lambda: _call(target=lambda x: torch.full(x.shape[:1], math.nan, dtype=x.dtype)),
        "log_target must return finite values",
        "NaN or +inf for 8 of 8",
    )


def test_target_of_the_wrong_shape_is_a_clear_error() -> None:
    raises_with(
        ValueError, lambda: _call(target=lambda x: x.sum(-1, keepdim=True)), "shape (8,)", "(8, 1)"
    )


def test_flow_of_the_wrong_dimension() -> None:
    raises_with(
        ValueError,
        lambda: _call(flow=gaussian_flow([0.0], [1.0])),
        "the target is 2-dimensional",
        "shape (1,)",
    )


def test_a_target_failing_on_the_flow_samples_names_their_shape() -> None:
    three = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    raises_with(
        ValueError,
        lambda: _call(target=three.log_prob),
        "failed on the flow's samples of shape (8, 2)",
    )


def test_bad_arguments_are_named() -> None:
    raises_with(ValueError, lambda: _call(objective="kl"), "objective in", "'kl'")
    raises_with(ValueError, lambda: _call(steps=0), "steps", "got 0")
    raises_with(TypeError, lambda: _call(batch_size=None), "batch_size")
    raises_with(ValueError, lambda: _call(lr=-1.0), "lr")
    raises_with(ValueError, lambda: _call(grad_clip=0.0), "grad_clip")
    raises_with(ValueError, lambda: _call(max_seconds=0), "max_seconds")
    raises_with(ValueError, lambda: _call(objective="forward_kl"), "needs target_samples")
    raises_with(
        ValueError,
        lambda: _call(
            objective="forward_kl", target_samples=torch.zeros(5, 3, dtype=torch.float64)
        ),
        "shape (n, 2)",
        "(5, 3)",
    )
    raises_with(ValueError, lambda: _call(target_samples=torch.zeros(5, 2)), "forward_kl' only")
    raises_with(
        ValueError, lambda: _call(objective="alpha_2", path_gradient=True), "'reverse_kl' only"
    )
    raises_with(ValueError, lambda: _call(context=torch.zeros(2)), "unconditional")
    frozen = gaussian_flow([0.0, 0.0], [1.0, 1.0]).requires_grad_(False)
    raises_with(ValueError, lambda: _call(flow=frozen), "no parameters")
