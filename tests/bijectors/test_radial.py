"""Tests of Radial: invertible for any raw parameters, a stable closed-form forward, a density."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from flowkit.bijectors import Compose, Radial
from flowkit.distributions import Flow, StandardNormal
from flowkit.testing import check_bijector
from flowkit.testing.strategies import seeds, st, tensors
from tests.helpers import grid_mass, raises_with

F64 = torch.float64


def _radial(reference: torch.Tensor, raw_alpha: float, raw_beta: float) -> Radial:
    radial = Radial(reference.numel()).double()
    with torch.no_grad():
        radial.reference.copy_(reference)
        radial.raw_alpha.fill_(raw_alpha)
        radial.raw_beta.fill_(raw_beta)
    return radial


@given(
    reference=tensors((3,)),
    raw_alpha=st.floats(-20, 20),
    raw_beta=st.floats(-20, 20),
    z=tensors((3,), min_value=-6, max_value=6),
)
def test_constraint_holds_for_any_raw_parameters(reference, raw_alpha, raw_beta, z):
    radial = _radial(reference, raw_alpha, raw_beta)
    with torch.no_grad():
        alpha, beta = radial.alpha_beta()
    assert float(alpha) > 0 and float(beta) >= -float(alpha)
    jacobian = torch.autograd.functional.jacobian(lambda v: radial.inverse(v)[0], z)
    sign, log_det = torch.linalg.slogdet(jacobian)
    assert float(sign) == 1.0
    with torch.no_grad():
        _, log_abs_det = radial.inverse(z)
    torch.testing.assert_close(log_abs_det, log_det, atol=1e-8, rtol=1e-8)


@given(
    reference=tensors((2,)),
    raw_alpha=st.floats(-4, 4),
    raw_beta=st.floats(-4, 6),
    z=tensors((5, 2), min_value=-6, max_value=6),
)
def test_round_trip_for_any_raw_parameters(reference, raw_alpha, raw_beta, z):
    radial = _radial(reference, raw_alpha, raw_beta)
    with torch.no_grad():
        x, inverse_log_abs_det = radial.inverse(z)
        z_back, log_abs_det = radial(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(log_abs_det, -inverse_log_abs_det, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("radius", [0.0, 1e-12, 1e-3, 1.0, 1e3, 1e8])
@pytest.mark.parametrize("raw_beta", [-8.0, 0.3, 8.0])
def test_forward_is_exact_at_every_radius(radius, raw_beta):
    # Small radii with beta near -alpha, and large ones, are where a naive root cancels.
    radial = _radial(torch.tensor([0.5, -1.0], dtype=F64), 0.2, raw_beta)
    z = radial.reference.detach() + radius * torch.tensor([[0.6, 0.8]], dtype=F64)
    with torch.no_grad():
        x, _ = radial.inverse(z)
        z_back, _ = radial(x)
    torch.testing.assert_close(z_back, z, atol=1e-12, rtol=1e-12)


def test_starts_as_the_identity_and_is_seeded():
    radial = Radial(3, seed=5)
    z = torch.randn(4, 3)
    x, log_abs_det = radial.inverse(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_abs_det, torch.zeros(4))
    torch.testing.assert_close(Radial(3, seed=5).reference, radial.reference)
    assert not torch.equal(Radial(3, seed=6).reference, radial.reference)


@given(seed=seeds())
def test_gradients_of_forward_match_finite_differences(seed):
    generator = torch.Generator().manual_seed(seed)
    radial = Radial(3).double()
    names = [name for name, _ in radial.named_parameters()]
    values = tuple(
        torch.randn(p.shape, generator=generator, dtype=F64, requires_grad=True)
        for p in radial.parameters()
    )
    x = torch.randn(4, 3, generator=generator, dtype=F64, requires_grad=True)

    def forward(x, *values):
        return torch.func.functional_call(radial, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *values))


def test_density_of_a_radial_flow_integrates_to_one():
    steps = [Radial(2, seed=seed) for seed in range(3)]
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for step in steps:
            for parameter in step.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
    flow = Flow(StandardNormal((2,)), Compose(steps)).double()
    mass = grid_mass(flow.log_prob, bound=10.0, points=501)
    assert abs(mass - 1.0) < 0.01, mass
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob(64)
        torch.testing.assert_close(flow.log_prob(x), log_q)


def test_contract_in_float32_and_float64():
    for dtype in (torch.float32, torch.float64):
        check_bijector(Radial(4, seed=0), (4,), dtype=dtype, perturb=1.0, input_scale=2.0)


def test_bad_input_names_what_was_expected():
    raises_with(ValueError, lambda: Radial(0), "Radial", "features", "got 0")
    radial = Radial(2)
    raises_with(ValueError, lambda: radial(torch.randn(4, 3)), "Radial", "(2)", "(4, 3)")
    raises_with(ValueError, lambda: radial.inverse(torch.randn(3)), "Radial", "latent", "(3)")


def test_amortised_parameters_are_the_shared_ones_plus_a_linear_map_of_the_context():
    generator = torch.Generator().manual_seed(0)
    amortised = Radial(3, context_features=2, seed=0).double()
    with torch.no_grad():
        for parameter in amortised.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=F64))
    context = torch.randn(4, 2, generator=generator, dtype=F64)
    z = torch.randn(4, 3, generator=generator, dtype=F64)
    with torch.no_grad():
        x, log_abs_det = amortised.inverse(z, context)
        offsets = context @ amortised.amortizer.linear.weight.T
    for row in range(4):
        reference, raw_alpha, raw_beta = offsets[row].split([3, 1, 1])
        alone = _radial(
            amortised.reference + reference,
            float(amortised.raw_alpha.detach() + raw_alpha),
            float(amortised.raw_beta.detach() + raw_beta),
        )
        with torch.no_grad():
            x_row, log_abs_det_row = alone.inverse(z[row])
        torch.testing.assert_close(x[row], x_row)
        torch.testing.assert_close(log_abs_det[row], log_abs_det_row)
    with torch.no_grad():
        torch.testing.assert_close(amortised(x, context)[0], z)
    raises_with(ValueError, lambda: amortised(x), "Radial", "context", "None")
