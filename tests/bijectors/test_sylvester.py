"""Tests of the Sylvester flows: invertible for any raw parameters, exact solves, a density."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from flowkit.bijectors import (
    Compose,
    HouseholderSylvester,
    OrthogonalSylvester,
    TriangularSylvester,
    householder_product,
)
from flowkit.distributions import Flow, StandardNormal
from flowkit.testing import check_bijector
from flowkit.testing.strategies import seeds, st
from tests.helpers import grid_mass, raises_with

F64 = torch.float64

VARIANTS = {
    "orthogonal": lambda seed: OrthogonalSylvester(4, seed=seed),
    "orthogonal-bottleneck": lambda seed: OrthogonalSylvester(4, 2, seed=seed),
    "householder": lambda seed: HouseholderSylvester(4, 3, seed=seed),
    "triangular": lambda seed: TriangularSylvester(4, seed=seed),
    "triangular-reversed": lambda seed: TriangularSylvester(4, reverse=True, seed=seed),
}


def _randomised(name: str, seed: int, scale: float):
    """A Sylvester flow of the named variant whose raw parameters are all N(0, scale^2)."""
    flow = VARIANTS[name](seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=F64))
    return flow


@pytest.mark.parametrize("name", sorted(VARIANTS))
@given(seed=seeds(), scale=st.floats(0.1, 4.0))
def test_constraint_holds_for_any_raw_parameters(name, seed, scale):
    flow = _randomised(name, seed, scale)
    with torch.no_grad():
        q, upper, tilde, rho, _ = flow.factors()
    columns = flow.columns
    torch.testing.assert_close(q.T @ q, torch.eye(columns, dtype=F64), atol=1e-12, rtol=0)
    assert bool((rho > -1).all())
    torch.testing.assert_close(torch.diagonal(tilde @ upper), rho, atol=1e-12, rtol=1e-12)
    assert torch.equal(upper, upper.triu()) and torch.equal(tilde, tilde.triu())
    z = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2
    jacobian = torch.autograd.functional.jacobian(lambda v: flow.inverse(v)[0], z)
    sign, log_det = torch.linalg.slogdet(jacobian)
    assert float(sign) == 1.0
    with torch.no_grad():
        _, log_abs_det = flow.inverse(z)
    torch.testing.assert_close(log_abs_det, log_det, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@given(seed=seeds(), scale=st.floats(0.1, 2.0))
def test_round_trip_for_any_raw_parameters(name, seed, scale):
    flow = _randomised(name, seed, scale)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed + 1), dtype=F64) * 3
    with torch.no_grad():
        x, inverse_log_abs_det = flow.inverse(z)
        z_back, log_abs_det = flow(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(log_abs_det, -inverse_log_abs_det, atol=1e-9, rtol=1e-9)


def test_forward_is_exact_near_the_invertibility_boundary():
    # r_ii r~_ii = -1 + 1e-4 everywhere: each scalar equation is 1e4 times flatter than identity.
    flow = TriangularSylvester(3, seed=0).double()
    with torch.no_grad():
        flow.raw_diagonal.fill_(float(torch.tensor(1e-4, dtype=F64).expm1().log()))
        flow.tilde_log_diagonal.fill_(1.0)
        flow.upper_entries.fill_(0.5)
    z = torch.randn(8, 3, dtype=F64) * 0.1
    with torch.no_grad():
        x, _ = flow.inverse(z)
        z_back, _ = flow(x)
        x_again, _ = flow.inverse(z_back)
    # The solve's backward error is rounding: z_back maps to x to working precision. (Its forward
    # error is that times the condition number of the triangular system, up to 1e4^3 here.)
    torch.testing.assert_close(x_again, x, atol=16 * torch.finfo(F64).eps, rtol=0)
    torch.testing.assert_close(z_back, z, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_starts_as_the_identity(name):
    flow = VARIANTS[name](0)
    z = torch.randn(5, 4)
    x, log_abs_det = flow.inverse(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_abs_det, torch.zeros(5))


def test_triangular_orders_are_the_identity_and_the_reversal():
    eye = torch.eye(3)
    assert torch.equal(TriangularSylvester(3).factors()[0], eye)
    assert torch.equal(TriangularSylvester(3, reverse=True).factors()[0], eye.flip(-1))


@pytest.mark.parametrize("name", ["orthogonal-bottleneck", "householder", "triangular"])
def test_gradients_of_the_solve_match_finite_differences(name):
    flow = _randomised(name, 3, 0.7)
    names = [n for n, _ in flow.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in flow.parameters())
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    x.requires_grad_(True)

    def forward(x, *values):
        return torch.func.functional_call(flow, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *values))


@pytest.mark.parametrize("name", ["orthogonal", "householder", "triangular"])
def test_density_of_a_sylvester_flow_integrates_to_one(name):
    make = {
        "orthogonal": lambda k: OrthogonalSylvester(2, seed=k),
        "householder": lambda k: HouseholderSylvester(2, seed=k),
        "triangular": lambda k: TriangularSylvester(2, reverse=k % 2 == 1, seed=k),
    }[name]
    steps = [make(k) for k in range(3)]
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for step in steps:
            for parameter in step.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
    flow = Flow(StandardNormal((2,)), Compose(steps)).double()
    mass = grid_mass(flow.log_prob, bound=10.0, points=401)
    assert abs(mass - 1.0) < 0.01, mass
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob(64)
        torch.testing.assert_close(flow.log_prob(x), log_q)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_contract_in_float32(name):
    check_bijector(VARIANTS[name](1), (4,), dtype=torch.float32, perturb=1.0, input_scale=2.0)


def test_bad_input_names_what_was_expected():
    raises_with(ValueError, lambda: OrthogonalSylvester(3, 4), "columns", "got 4")
    raises_with(ValueError, lambda: HouseholderSylvester(3, 0), "reflections", "got 0")
    raises_with(TypeError, lambda: TriangularSylvester(3, reverse=1), "reverse")
    flow = OrthogonalSylvester(3)
    raises_with(ValueError, lambda: flow(torch.randn(2, 4)), "OrthogonalSylvester", "(3)")
    raises_with(ValueError, lambda: flow.inverse(torch.randn(2, 2)), "latent", "(2, 2)")


AMORTISED = {
    "orthogonal": lambda: OrthogonalSylvester(4, 3, context_features=2, seed=0),
    "householder": lambda: HouseholderSylvester(4, 2, context_features=2, seed=0),
    "triangular": lambda: TriangularSylvester(4, reverse=True, context_features=2, seed=0),
}


@pytest.mark.parametrize("name", sorted(AMORTISED))
def test_amortised_flows_start_as_the_shared_map_and_follow_the_context(name):
    amortised = AMORTISED[name]().double()
    generator = torch.Generator().manual_seed(1)
    shared = {n: p for n, p in amortised.named_parameters() if not n.startswith("amortizer")}
    with torch.no_grad():
        for parameter in shared.values():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=F64))
    context = torch.randn(5, 2, generator=generator, dtype=F64)
    z = torch.randn(5, 4, generator=generator, dtype=F64)
    with torch.no_grad():
        x_shared, log_abs_det_shared = amortised.inverse(z, torch.zeros_like(context))
        # Zero weights at the start: every context gives the shared map.
        x, log_abs_det = amortised.inverse(z, context)
        torch.testing.assert_close(x, x_shared)
        amortised.amortizer.linear.weight.normal_(generator=generator)
        x, log_abs_det = amortised.inverse(z, context)
        assert (x - x_shared).abs().amax(-1).min() > 1e-3
        # Each row is the map of its own parameters: evaluated alone, it gives the same.
        x_first, _ = amortised.inverse(z[:1], context[:1])
        torch.testing.assert_close(x_first, x[:1])
        z_back, forward_log_abs_det = amortised(x, context)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(forward_log_abs_det, -log_abs_det)
    flow = Flow(StandardNormal((4,)), amortised, context_shape=(2,)).double()
    with torch.no_grad():
        samples, log_q = flow.sample_and_log_prob(None, context)
        torch.testing.assert_close(flow.log_prob(samples, context), log_q)
    raises_with(ValueError, lambda: amortised(x), "context", "None")


def test_householder_product_of_a_batch_is_the_product_of_each():
    vectors = torch.randn(3, 2, 4, 4, dtype=F64)
    batched = householder_product(vectors)
    assert batched.shape == (3, 2, 4, 4)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(batched[i, j], householder_product(vectors[i, j]))
