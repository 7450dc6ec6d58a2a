import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit import Inverse
from flowkit.bijectors import (
    RationalQuadraticSpline,
    SplineAutoregressive,
    SplineCoupling,
    SplineMap,
    channel_mask,
)
from flowkit.bijectors._rq_spline import (
    MIN_BIN_HEIGHT,
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    SplineKnots,
    rq_spline_forward,
    rq_spline_inverse,
    spline_knots,
)
from flowkit.nn import MLP
from flowkit.testing import check_bijector
from flowkit.testing.strategies import batch_shapes, scales, seeds, spline_knot_inputs
from tests.registry_autoregressive import ENTRIES

tail_bounds = st.sampled_from([0.5, 1.0, 3.0])


def _random_knots(shape, bins, tail_bound, seed, scale=1.5):
    generator = torch.Generator().manual_seed(seed)

    def draw(size):
        return scale * torch.randn(tuple(shape) + (size,), generator=generator, dtype=torch.float64)

    return spline_knots(draw(bins), draw(bins), draw(bins - 1), tail_bound=tail_bound)


def _normal(shape, generator, scale=1.5):
    return scale * torch.randn(shape, generator=generator, dtype=torch.float64)


def _randomised_spline(features, bins, tail_bound, seed):
    spline = RationalQuadraticSpline((features,), bins=bins, tail_bound=tail_bound, event_rank=1)
    spline = spline.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in spline.parameters():
            parameter.copy_(_normal(parameter.shape, generator))
    return spline


# --- the spline itself against brute force ----------------------------------------------------


@given(bins=st.integers(2, 7), tail_bound=tail_bounds, seed=seeds())
def test_spline_passes_through_its_knots_with_the_given_derivatives(bins, tail_bound, seed):
    knots = _random_knots((3,), bins, tail_bound, seed)
    # Each row's spline evaluated at its own knots: the knots get batch shape (3, 1).
    row_spline = SplineKnots(*(table.unsqueeze(-2) for table in knots))
    x = knots.x
    y, log_derivative = rq_spline_forward(x, row_spline, tail_bound)
    torch.testing.assert_close(y, knots.y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_derivative.exp(), knots.derivative, rtol=1e-10, atol=1e-12)
    # Brute force: second-order one-sided difference quotients, from the left and from the right,
    # both give the knot's derivative (the spline is C^1 at every knot, ends and tails included).
    # Steps are a small fraction of the narrower neighbouring bin, so each quotient sees one piece.
    widths = torch.nn.functional.pad(knots.x.diff(dim=-1), (1, 1), value=float("inf"))
    step = 1e-6 * torch.minimum(widths[..., :-1], widths[..., 1:])

    def spline_at(value):
        return rq_spline_forward(value, row_spline, tail_bound)[0]

    right = (-3 * y + 4 * spline_at(x + step) - spline_at(x + 2 * step)) / (2 * step)
    left = (3 * y - 4 * spline_at(x - step) + spline_at(x - 2 * step)) / (2 * step)
    scale = knots.derivative.clamp_min(1.0)
    torch.testing.assert_close(right / scale, knots.derivative / scale, rtol=0, atol=1e-5)
    torch.testing.assert_close(left / scale, knots.derivative / scale, rtol=0, atol=1e-5)
    assert torch.all(knots.derivative[..., 1:-1] >= MIN_DERIVATIVE)
    assert torch.all(knots.derivative[..., [0, -1]] == 1.0)
    assert torch.all(knots.x.diff(dim=-1) >= 2 * tail_bound * MIN_BIN_WIDTH * (1 - 1e-9))
    assert torch.all(knots.y.diff(dim=-1) >= 2 * tail_bound * MIN_BIN_HEIGHT * (1 - 1e-9))


@given(bins=st.integers(2, 7), tail_bound=tail_bounds, seed=seeds())
def test_inverse_matches_bisection(bins, tail_bound, seed):
    knots = _random_knots((4,), bins, tail_bound, seed)
    generator = torch.Generator().manual_seed(seed)
    y = (torch.rand(50, 4, generator=generator, dtype=torch.float64) * 2 - 1) * 1.5 * tail_bound
    # Brute force: bisection on the increasing forward map.
    low = torch.full_like(y, -3.0 * tail_bound)
    high = torch.full_like(y, 3.0 * tail_bound)
    for _ in range(100):
        middle = (low + high) / 2
        below = rq_spline_forward(middle, knots, tail_bound)[0] < y
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    x, log_derivative = rq_spline_inverse(y, knots, tail_bound)
    torch.testing.assert_close(x, (low + high) / 2, rtol=0, atol=1e-9)
    forward_log_derivative = rq_spline_forward(x, knots, tail_bound)[1]
    torch.testing.assert_close(log_derivative, -forward_log_derivative, rtol=1e-9, atol=1e-9)
    outside = y.abs() > tail_bound
    assert torch.equal(x[outside], y[outside]) and torch.all(log_derivative[outside] == 0)


@given(bins=st.integers(2, 7), tail_bound=tail_bounds, seed=seeds())
def test_spline_is_increasing_and_maps_the_interval_onto_itself(bins, tail_bound, seed):
    knots = _random_knots((), bins, tail_bound, seed)
    x = torch.linspace(-2 * tail_bound, 2 * tail_bound, 2001, dtype=torch.float64)
    y, _ = rq_spline_forward(x, knots, tail_bound)
    assert torch.all(y.diff() > 0)
    inside = x.abs() <= tail_bound
    # y_k + h_k lands on y_{k+1} only to rounding, so the bound holds to a few ulps.
    assert torch.all(y[inside].abs() <= tail_bound * (1 + 1e-14))
    assert torch.equal(y[~inside], x[~inside])


def test_zero_parameters_give_the_identity():
    spline = RationalQuadraticSpline((3,), bins=5, tail_bound=2.0, event_rank=1).double()
    x = torch.linspace(-3, 3, 33, dtype=torch.float64).reshape(11, 3)
    z, log_abs_det = spline(x)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-12)
    zeros = torch.zeros(11, dtype=torch.float64)
    torch.testing.assert_close(log_abs_det, zeros, rtol=0, atol=1e-12)


# --- the contract, at and next to knots and in the tails ---------------------------------------


@given(
    data=st.data(),
    features=st.integers(1, 4),
    bins=st.integers(2, 6),
    tail_bound=tail_bounds,
    seed=seeds(),
)
def test_elementwise_spline_contract_at_knots_and_tails(data, features, bins, tail_bound, seed):
    spline = _randomised_spline(features, bins, tail_bound, seed)
    knots = spline.knots()
    x = data.draw(spline_knot_inputs(knots.x.detach(), (3, features)), label="x")
    check_bijector(spline, (features,), x=x, perturb=0.0)
    y = data.draw(spline_knot_inputs(knots.y.detach(), (3, features)), label="y")
    check_bijector(Inverse(spline), (features,), x=y, perturb=0.0)


def _constant_conditioner_knots(bias, elements, bins, tail_bound):
    theta = bias.detach().reshape(elements, 3 * bins - 1)
    return spline_knots(
        theta[:, :bins], theta[:, bins : 2 * bins], theta[:, 2 * bins :], tail_bound=tail_bound
    )


@given(data=st.data(), features=st.integers(2, 5), bins=st.integers(2, 5), seed=seeds())
def test_spline_coupling_contract_at_knots_and_tails(data, features, bins, seed):
    tail_bound = 1.0
    kept = features // 2
    params = 3 * bins - 1
    conditioner = MLP(kept, params * (features - kept), (6,), context_features=2)
    mask = channel_mask(features, event_rank=1)
    coupling = SplineCoupling(conditioner, mask, bins=bins, tail_bound=tail_bound).double()
    # Zero output weights and a random bias: every element's spline is fixed, so its knots are
    # known and the inputs can sit on them.
    last = conditioner.network[-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last.bias.copy_(_normal(last.bias.shape, generator))
    knots = _constant_conditioner_knots(last.bias, features - kept, bins, tail_bound)
    uniform = torch.linspace(-tail_bound, tail_bound, bins + 1, dtype=torch.float64)
    rows = torch.cat([uniform.expand(kept, bins + 1), knots.x])
    x = data.draw(spline_knot_inputs(rows, (3, features)), label="x")
    context = torch.randn(3, 2, dtype=torch.float64)
    check_bijector(coupling, (features,), (2,), x=x, context=context, perturb=0.0)
    # The conditioner's output is read with the documented interleaved layout: element j's
    # parameters are channels j * P ... j * P + P - 1, so its knots map onto their heights.
    with torch.no_grad():
        z, _ = coupling(torch.cat([x[:, :kept], knots.x[:, 1].expand(3, -1)], dim=-1), context)
    torch.testing.assert_close(z[:, kept:], knots.y[:, 1].expand(3, -1), rtol=1e-12, atol=1e-12)


@given(data=st.data(), features=st.integers(1, 4), bins=st.integers(2, 5), seed=seeds())
def test_spline_autoregressive_contract_at_knots_and_tails(data, features, bins, seed):
    tail_bound = 1.0
    spline = SplineAutoregressive(
        features, bins=bins, tail_bound=tail_bound, hidden_features=(6,), order="reversed"
    ).double()
    output = spline.conditioner.output_layer
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        output.bias.copy_(_normal(output.bias.shape, generator))
    knots = _constant_conditioner_knots(output.bias, features, bins, tail_bound)
    x = data.draw(spline_knot_inputs(knots.x, (3, features)), label="x")
    check_bijector(spline, (features,), x=x, perturb=0.0)
    with torch.no_grad():
        z, _ = spline(knots.x[:, -2].expand(2, -1))
    torch.testing.assert_close(z, knots.y[:, -2].expand(2, -1), rtol=1e-12, atol=1e-12)


@given(
    features=st.integers(2, 5),
    bins=st.integers(2, 6),
    tail_bound=tail_bounds,
    conditional=st.booleans(),
    batch_shape=batch_shapes(),
    seed=seeds(),
    perturb=scales(0.1, 1.0),
)
def test_spline_coupling_contract_with_perturbed_network(
    features, bins, tail_bound, conditional, batch_shape, seed, perturb
):
    kept = features // 2
    context_features = 3 if conditional else None
    conditioner = MLP(
        features - kept, (3 * bins - 1) * kept, (8,), context_features=context_features
    )
    mask = channel_mask(features, event_rank=1, flip=True)
    coupling = SplineCoupling(conditioner, mask, bins=bins, tail_bound=tail_bound)
    check_bijector(
        coupling,
        (features,),
        None if context_features is None else (3,),
        batch_shape=batch_shape,
        seed=seed,
        perturb=perturb,
        input_scale=2.0 * tail_bound,
    )


@given(
    features=st.integers(1, 4),
    bins=st.integers(2, 6),
    tail_bound=tail_bounds,
    conditional=st.booleans(),
    residual=st.booleans(),
    seed=seeds(),
    perturb=scales(0.1, 0.5),
)
def test_spline_autoregressive_contract_with_perturbed_network(
    features, bins, tail_bound, conditional, residual, seed, perturb
):
    spline = SplineAutoregressive(
        features,
        bins=bins,
        tail_bound=tail_bound,
        context_features=2 if conditional else None,
        hidden_features=(8, 8),
        residual=residual,
    )
    check_bijector(
        spline,
        (features,),
        (2,) if conditional else None,
        seed=seed,
        perturb=perturb,
        input_scale=2.0 * tail_bound,
    )


# --- arguments ---------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bins >= 2, got 1"):
        RationalQuadraticSpline(bins=1)
    with pytest.raises(ValueError, match="tail_bound > 0, got 0"):
        SplineAutoregressive(3, tail_bound=0.0)
    with pytest.raises(ValueError, match="bins >= 2"):
        SplineCoupling(MLP(1, 2), channel_mask(2, event_rank=1), bins=2.5)
    coupling = SplineCoupling(MLP(2, 10), channel_mask(4, event_rank=1), bins=4)
    with pytest.raises(ValueError, match="must return 22 channels"):
        coupling(torch.randn(3, 4))


SPLINE_ENTRIES = [e[:4] for e in ENTRIES if "spline" in e[0]]


@pytest.mark.parametrize(
    "name, make, event_shape, context_shape", SPLINE_ENTRIES, ids=[e[0] for e in SPLINE_ENTRIES]
)
def test_registry_entries_honour_the_contract(name, make, event_shape, context_shape):
    check_bijector(make(), event_shape, context_shape, seed=2)


def test_float32_spline_inverse_is_as_accurate_as_the_conditioning_allows() -> None:
    # A nearly flat bin (slope ~0.01, derivative down to ~1e-4 inside it): one ulp of z moves x by
    # ulp(z) / g'(x). The float32 inverse must stay within a few of those of the exact inverse of
    # the same float32 latent, which is all any float32 algorithm can do.
    bins = 4
    raw = torch.zeros(2001, 3 * bins - 1, dtype=torch.float64)
    raw[:, 0], raw[:, bins] = 2.0, -4.0  # wide first bin, low first bin
    raw[:, 2 * bins] = 3.0  # steep derivative at the first inner knot
    spline = SplineMap(bins=bins)
    x = torch.linspace(-2.99, 2.99, 2001, dtype=torch.float64)
    z, log_derivative = spline(x, (raw,))
    assert float(log_derivative.min().exp()) < 1e-3  # the flat region is really there
    z32 = z.float()
    x32, _ = spline.inverse(z32, (raw.float(),))
    exact, _ = spline.inverse(z32.double(), (raw,))
    ulp = torch.finfo(torch.float32).eps * z32.double().abs().clamp_min(1.0)
    allowed = 4 * ulp / log_derivative.exp() + 4 * torch.finfo(torch.float32).eps * x.abs()
    assert bool(((x32.double() - exact).abs() <= allowed).all())
