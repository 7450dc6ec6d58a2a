"""Tests of Planar: invertible for any raw parameters, exact root finds, a normalised density."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

from flowkit.bijectors import Compose, Planar
from flowkit.distributions import Flow, StandardNormal
from flowkit.testing import check_bijector
from flowkit.testing.strategies import seeds, st, tensors
from tests.helpers import grid_mass, raises_with

F64 = torch.float64


def _planar(u: torch.Tensor, w: torch.Tensor, b: float) -> Planar:
    planar = Planar(u.numel()).double()
    with torch.no_grad():
        planar.u.copy_(u)
        planar.w.copy_(w)
        planar.b.fill_(b)
    return planar


def _generative_jacobian(planar: Planar, z: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: planar.inverse(v)[0], z)


# Raw parameters up to 3 reach w^T u = -27, where 1 + w^T u_hat = softplus(-27) ~ 2e-12: a map
# on the edge of invertibility, whose determinant float64 still resolves (rounding of w^T u_hat is
# ~ 1e-14).
RAW = 3.0


@given(
    u=tensors((3,), min_value=-RAW, max_value=RAW),
    w=tensors((3,), min_value=-RAW, max_value=RAW),
    b=st.floats(-5, 5),
    z=tensors((3,), min_value=-4, max_value=4),
)
def test_constraint_holds_for_any_raw_parameters(u, w, b, z):
    planar = _planar(u, w, b)
    with torch.no_grad():
        inner = float(planar.w @ planar.constrained_u())
    assert inner > -1.0
    sign, log_det = torch.linalg.slogdet(_generative_jacobian(planar, z))
    assert float(sign) == 1.0
    with torch.no_grad():
        _, log_abs_det = planar.inverse(z)
    # The determinant 1 + w^T u_hat tanh' loses eps |w^T u| / (1 + w^T u_hat) of its precision.
    raw_inner = float(w @ u)
    eps = torch.finfo(F64).eps
    tolerance = 1e-9 + 100 * eps * (1 + abs(raw_inner)) / float(F.softplus(torch.tensor(raw_inner)))
    assert abs(float(log_abs_det) - float(log_det)) < tolerance


@given(
    u=tensors((3,), min_value=-6, max_value=6),
    w=tensors((3,), min_value=-6, max_value=6),
    b=st.floats(-3, 3),
    z=tensors((4, 3), min_value=-4, max_value=4),
)
def test_round_trip_for_any_raw_parameters(u, w, b, z):
    planar = _planar(u, w, b)
    with torch.no_grad():
        x, inverse_log_abs_det = planar.inverse(z)
        z_back, log_abs_det = planar(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(log_abs_det, -inverse_log_abs_det, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_exact_near_the_invertibility_boundary(dtype):
    # w^T u_hat = -1 + 1e-3: the map flattens almost to a fold along w at w^T z + b = 0.
    w = torch.tensor([1.0, 0.0], dtype=F64)
    raw_inner = math.log(math.expm1(1e-3))
    planar = _planar(torch.tensor([raw_inner, 0.5], dtype=F64), w, 0.0).to(dtype)
    z = torch.linspace(-0.05, 0.05, 11, dtype=dtype)[:, None] * torch.tensor(
        [1.0, 1.0], dtype=dtype
    )
    with torch.no_grad():
        x, _ = planar.inverse(z)
        z_back, _ = planar(x)
    eps = torch.finfo(dtype).eps
    # The inverse map is 1000 times steeper than the identity here: 1000 ulps is its precision.
    torch.testing.assert_close(z_back, z, atol=1e3 * eps, rtol=0)


def test_starts_as_the_identity_and_is_seeded():
    planar = Planar(4, seed=3)
    z = torch.randn(5, 4)
    x, log_abs_det = planar.inverse(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_abs_det, torch.zeros(5))
    torch.testing.assert_close(Planar(4, seed=3).w, planar.w)
    assert not torch.equal(Planar(4, seed=4).w, planar.w)


@given(seed=seeds())
def test_gradients_of_the_root_find_match_finite_differences(seed):
    generator = torch.Generator().manual_seed(seed)
    planar = Planar(3, seed=seed).double()
    names = [name for name, _ in planar.named_parameters()]
    values = tuple(
        torch.randn(p.shape, generator=generator, dtype=F64, requires_grad=True)
        for p in planar.parameters()
    )
    x = torch.randn(4, 3, generator=generator, dtype=F64, requires_grad=True)

    def forward(x, *values):
        return torch.func.functional_call(planar, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *values))


def test_density_of_a_planar_flow_integrates_to_one():
    torch.manual_seed(0)
    steps = [Planar(2, seed=seed) for seed in range(4)]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in steps:
            for parameter in step.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
    flow = Flow(StandardNormal((2,)), Compose(steps)).double()
    mass = grid_mass(flow.log_prob, bound=9.0, points=451)
    assert abs(mass - 1.0) < 0.01, mass
    # The density direction (root finds) and the sampling direction (closed form) agree.
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob(64)
        torch.testing.assert_close(flow.log_prob(x), log_q)


def test_contract_in_both_directions_in_float32_and_float64():
    for dtype in (torch.float32, torch.float64):
        check_bijector(Planar(3, seed=0), (3,), dtype=dtype, perturb=1.0, input_scale=2.0)


def test_bad_input_names_what_was_expected():
    raises_with(ValueError, lambda: Planar(0), "Planar", "features", "got 0")
    raises_with(TypeError, lambda: Planar(2.5), "Planar", "features", "2.5")
    planar = Planar(3)
    raises_with(ValueError, lambda: planar(torch.randn(4, 2)), "Planar", "(3)", "(4, 2)")
    raises_with(ValueError, lambda: planar.inverse(torch.randn(2)), "Planar", "latent", "(2)")
    raises_with(TypeError, lambda: planar(torch.ones(2, 3, dtype=torch.long)), "floating")


def test_amortised_parameters_are_the_shared_ones_plus_a_linear_map_of_the_context():
    generator = torch.Generator().manual_seed(0)
    amortised = Planar(3, context_features=2, seed=0).double()
    with torch.no_grad():
        for parameter in amortised.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=F64))
    context = torch.randn(4, 2, generator=generator, dtype=F64)
    z = torch.randn(4, 3, generator=generator, dtype=F64)
    with torch.no_grad():
        x, log_abs_det = amortised.inverse(z, context)
        offsets = context @ amortised.amortizer.linear.weight.T
    for row in range(4):
        du, dw, db = offsets[row].split([3, 3, 1])
        alone = _planar(amortised.u + du, amortised.w + dw, float(amortised.b.detach() + db))
        with torch.no_grad():
            x_row, log_abs_det_row = alone.inverse(z[row])
        torch.testing.assert_close(x[row], x_row)
        torch.testing.assert_close(log_abs_det[row], log_abs_det_row)
    with torch.no_grad():
        torch.testing.assert_close(amortised(x, context)[0], z)
    raises_with(ValueError, lambda: amortised(x), "Planar", "context", "(*batch, 2)", "None")
    raises_with(ValueError, lambda: amortised(x, context[:, :1]), "context", "(2)", "(4, 1)")
