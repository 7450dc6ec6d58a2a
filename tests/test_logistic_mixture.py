"""LogisticMixtureCDF: closed forms, tails, the bisection inverse, and the Bijector contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from flowkit.bijectors import (
    Autoregressive,
    Coupling,
    LogisticMixtureCDF,
    channel_mask,
    checkerboard_mask,
)
from flowkit.bijectors.maps import MIN_MIXTURE_LOG_SCALE
from flowkit.nn import MADE, MLP, GlowConditioner
from flowkit.testing import check_bijector

COMPONENTS = 3
PARAMS = 3 * COMPONENTS + 2


def _params(mixture: LogisticMixtureCDF, shape: tuple[int, ...], scale: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(shape + (mixture.params_per_element,), generator=generator) * scale
    return theta.double(), mixture.unpack(theta.double(), -1)


def _reference_cdf(x: Tensor, theta: Tensor, components: int) -> Tensor:
    """The mixture CDF written out term by term."""
    logits = theta[..., :components]
    means = theta[..., components : 2 * components]
    scales = theta[..., 2 * components : 3 * components].clamp(min=MIN_MIXTURE_LOG_SCALE).exp()
    weights = torch.softmax(logits, dim=-1)
    return (weights * torch.sigmoid((x.unsqueeze(-1) - means) / scales)).sum(-1)


def test_zero_parameters_are_the_identity() -> None:
    mixture = LogisticMixtureCDF(COMPONENTS)
    x = torch.linspace(-30, 30, 101)
    params = mixture.unpack(torch.zeros(101, PARAMS), -1)
    y, log_derivative = mixture(x, params)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x), atol=1e-5, rtol=0)
    back, _ = mixture.inverse(x, params)
    torch.testing.assert_close(back, x)


def test_forward_matches_the_written_out_cdf_and_autograd_derivative() -> None:
    mixture = LogisticMixtureCDF(COMPONENTS)
    theta, params = _params(mixture, (200,), 1.5, seed=1)
    x = torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    x.requires_grad_(True)
    y, log_derivative = mixture(x, params)
    a, b = params[3], params[4]
    cdf = _reference_cdf(x.detach(), theta, COMPONENTS)
    expected = torch.log(cdf / (1 - cdf)) * a.exp() + b
    # The written-out form loses digits where F is within rounding of 0 or 1: compare elsewhere.
    accurate = (cdf > 1e-4) & (cdf < 1 - 1e-4)
    assert float(accurate.double().mean()) > 0.8
    torch.testing.assert_close(y.detach()[accurate], expected[accurate], rtol=1e-9, atol=1e-9)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative.detach(), slope.log(), rtol=1e-9, atol=1e-9)


def test_tails_stay_finite_where_the_cdf_rounds_to_zero_or_one() -> None:
    # One component: logit F(x) = (x - mu) / s exactly, so y and log g' = tanh(a) - log s are
    # known.
    mixture = LogisticMixtureCDF(1)
    x = torch.tensor([-300.0, -90.0, 90.0, 300.0])
    mean, log_scale, a, b = 0.5, 0.3, -0.2, 1.0
    theta = torch.tensor([0.0, mean, log_scale, a, b]).expand(4, 5)
    y, log_derivative = mixture(x, mixture.unpack(theta, -1))
    applied = torch.tanh(torch.tensor(a))
    expected = (x - mean) / torch.tensor(log_scale).exp() * applied.exp() + b
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(log_derivative, torch.full_like(x, float(applied) - log_scale))


def test_log_scales_are_clamped_at_the_documented_minimum() -> None:
    mixture = LogisticMixtureCDF(2)
    x = torch.linspace(-0.01, 0.01, 11, dtype=torch.float64)
    narrow = torch.tensor([0.0, 0.0, 0.0, 0.002, -20.0, -30.0, 0.0, 0.0], dtype=torch.float64)
    at_minimum = narrow.clone()
    at_minimum[4:6] = MIN_MIXTURE_LOG_SCALE
    y, log_derivative = mixture(x, mixture.unpack(narrow.expand(11, 8), -1))
    y_min, log_derivative_min = mixture(x, mixture.unpack(at_minimum.expand(11, 8), -1))
    torch.testing.assert_close(y, y_min, rtol=0, atol=0)
    torch.testing.assert_close(log_derivative, log_derivative_min, rtol=0, atol=0)
    assert bool(torch.isfinite(log_derivative).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("tolerance", [None, 1e-3])
def test_inverse_meets_its_tolerance(dtype: torch.dtype, tolerance: float | None) -> None:
    mixture = LogisticMixtureCDF(COMPONENTS, tolerance=tolerance)
    theta, _ = _params(mixture, (500,), 1.5, seed=3)
    params = mixture.unpack(theta.to(dtype), -1)
    x = (torch.randn(500, generator=torch.Generator().manual_seed(4)) * 4).to(dtype)
    y, log_derivative = mixture(x, params)
    back, inverse_log_derivative = mixture.inverse(y, params)
    default = 1e-12 if dtype == torch.float64 else 1e-6
    # Rounding y by a few units in the last place moves the root by that over the slope g'(x).
    resolution = 8 * torch.finfo(dtype).eps * (1 + y.abs()) * torch.exp(-log_derivative)
    error = (back - x).abs()
    excess = error - (tolerance or default) - resolution
    assert float(excess.max()) <= 0, float(error[excess.argmax()])
    if dtype == torch.float64 or tolerance is not None:
        # Then most points are well conditioned: the bound above is mostly the tolerance itself.
        assert float((resolution < (tolerance or default)).double().mean()) > 0.5
    torch.testing.assert_close(
        inverse_log_derivative, -mixture(back, params)[1], rtol=1e-6, atol=1e-6
    )


def test_coarse_tolerance_stops_the_bisection_early() -> None:
    coarse = LogisticMixtureCDF(COMPONENTS, tolerance=1e-2)
    fine = LogisticMixtureCDF(COMPONENTS, tolerance=1e-12)
    theta, params = _params(coarse, (300,), 1.5, seed=5)
    x = torch.randn(300, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y, _ = coarse(x, params)
    coarse_error = (coarse.inverse(y, params)[0] - x).abs().max()
    fine_error = (fine.inverse(y, params)[0] - x).abs().max()
    assert float(coarse_error) <= 1e-2
    assert float(fine_error) < float(coarse_error) / 100


def test_inverse_gradients_follow_the_implicit_function_theorem() -> None:
    mixture = LogisticMixtureCDF(2, tolerance=1e-14)
    theta, _ = _params(mixture, (4,), 1.0, seed=7)
    y = torch.randn(4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def invert(y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        return mixture.inverse(y, mixture.unpack(theta, -1))

    assert torch.autograd.gradcheck(
        invert, (y.requires_grad_(True), theta.requires_grad_(True)), atol=1e-6
    )


# Network outputs as large as float64 allows without overflowing the mixture's own terms.
RAW = st.floats(-1e6, 1e6, allow_nan=False)


@given(
    theta=arrays("float64", (6, PARAMS), elements=RAW),
    x=arrays("float64", (6,), elements=st.floats(-50, 50)),
)
def test_tanh_bounds_the_affine_log_scale_for_any_network_output(theta, x) -> None:
    theta, x = torch.from_numpy(theta), torch.from_numpy(x)
    bounded, unbounded = (
        LogisticMixtureCDF(COMPONENTS),
        LogisticMixtureCDF(COMPONENTS, tanh_scale=False),
    )
    neutral = theta.clone()
    neutral[:, 3 * COMPONENTS] = 0.0
    # The affine log-scale adds to the log-derivative and nothing else depends on it.
    _, with_scale = bounded(x, bounded.unpack(theta, -1))
    _, without = bounded(x, bounded.unpack(neutral, -1))
    assert with_scale is not None and without is not None
    shift = with_scale - without
    assert bool((shift.abs() <= 1.0).all())
    torch.testing.assert_close(shift, torch.tanh(theta[:, 3 * COMPONENTS]), atol=1e-9, rtol=0)
    # Unbounded, the raw output itself is the log-scale.
    _, raw = unbounded(x, unbounded.unpack(theta, -1))
    assert raw is not None
    torch.testing.assert_close(raw - without, theta[:, 3 * COMPONENTS], atol=1e-9, rtol=1e-12)


def test_tanh_scale_inverse_undoes_the_bounded_affine_map() -> None:
    mixture = LogisticMixtureCDF(COMPONENTS)
    theta, params = _params(mixture, (50,), 4.0, seed=3)
    x = torch.randn(50, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y, log_derivative = mixture(x, params)
    back, inverse_log_derivative = mixture.inverse(y, params)
    torch.testing.assert_close(back, x, atol=1e-9, rtol=0)
    assert inverse_log_derivative is not None and log_derivative is not None
    torch.testing.assert_close(inverse_log_derivative, -log_derivative)


CONTRACT_CASES = {
    "coupling-mlp": (
        lambda: Coupling(
            MLP(2, 3 * PARAMS, (8,), zero_init=False),
            channel_mask(5, event_rank=1),
            LogisticMixtureCDF(COMPONENTS),
        ),
        (5,),
        None,
    ),
    "coupling-checkerboard-glow": (
        lambda: Coupling(
            GlowConditioner(2, 2 * PARAMS, hidden_channels=8),
            checkerboard_mask(2, 2),
            LogisticMixtureCDF(COMPONENTS),
        ),
        (2, 2, 2),
        None,
    ),
    "coupling-mlp-context": (
        lambda: Coupling(
            MLP(2, 2 * PARAMS, (8,), context_features=3, zero_init=False),
            channel_mask(4, event_rank=1, flip=True),
            LogisticMixtureCDF(COMPONENTS),
        ),
        (4,),
        (3,),
    ),
    "coupling-mlp-unbounded-scale": (
        lambda: Coupling(
            MLP(2, 3 * PARAMS, (8,), zero_init=False),
            channel_mask(5, event_rank=1),
            LogisticMixtureCDF(COMPONENTS, tanh_scale=False),
        ),
        (5,),
        None,
    ),
    "autoregressive-made": (
        lambda: Autoregressive(MADE(3, PARAMS, (8,)), LogisticMixtureCDF(COMPONENTS), (3,)),
        (3,),
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_contract_float64(name: str, seed: int) -> None:
    build, event_shape, context_shape = CONTRACT_CASES[name]
    torch.manual_seed(seed)
    check_bijector(build(), event_shape, context_shape, seed=seed, perturb=0.3, input_scale=2.0)


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
def test_contract_float32(name: str) -> None:
    build, event_shape, context_shape = CONTRACT_CASES[name]
    check_bijector(build(), event_shape, context_shape, dtype=torch.float32, perturb=0.1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"components": 0}, ValueError, "components as an int >= 1"),
        ({"components": 2.0}, TypeError, "components"),
        ({"tolerance": 0.0}, ValueError, "tolerance"),
        ({"max_iterations": 0}, ValueError, "max_iterations"),
        ({"tanh_scale": 1}, TypeError, "tanh_scale as a bool"),
    ],
)
def test_bad_options_are_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        LogisticMixtureCDF(**kwargs)
