"""ContinuousFlow: Hutchinson's estimate, the density's mass, adjoint gradients, closed forms."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn

from flowkit import Flow
from flowkit.bijectors import ContinuousFlow
from flowkit.distributions import StandardNormal
from flowkit.nn import VectorFieldMLP


def _flow(features: int = 2, **options) -> ContinuousFlow:
    torch.manual_seed(1)
    field = VectorFieldMLP(features, (16,), time_frequencies=1)
    return ContinuousFlow(field, features=features, **options).double()


class LinearField(nn.Module):
    """f(t, x) = a x: the solution is x e^{a t}, with closed-form penalties."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(rate, dtype=torch.float64))

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.rate * x


class PointMassField(nn.Module):
    r"""The marginal velocity of the flow-matching path from a point mass ``m`` (exact).

    With :math:`x_\tau = (1 - \tau) m + (\sigma + (1 - \sigma)\tau) \epsilon` the noise is a
    function of :math:`x_\tau`, so the conditional target is a field of :math:`(\tau, x_\tau)`.
    """

    def __init__(self, mass: Tensor, sigma_min: float, t0: float, t1: float) -> None:
        super().__init__()
        self.mass, self.sigma_min, self.t0, self.t1 = mass, sigma_min, t0, t1

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        tau = ((t - self.t0) / (self.t1 - self.t0)).unsqueeze(-1)
        sigma = self.sigma_min
        noise = (x - (1 - tau) * self.mass) / (sigma + (1 - sigma) * tau)
        return ((1 - sigma) * noise - self.mass) / (self.t1 - self.t0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(probe):
    # On one fixed grid the state does not depend on the probe, so the estimate's mean is the
    # exact log-determinant of that solve; each of the repeated rows draws its own probe.
    options = dict(method="rk4", step_size=0.25)
    exact_flow = _flow(3, **options)
    estimated = _flow(3, trace="hutchinson", probe=probe, **options)
    x = torch.randn(1, 3, dtype=torch.float64).expand(4000, 3)
    _, exact = exact_flow(x[:1])
    torch.manual_seed(0)
    estimates = estimated(x)[1].detach()
    standard_error = float(estimates.std()) / math.sqrt(len(estimates))
    assert float(estimates.std()) > 1e-3, "the estimate should vary with the probe"
    assert abs(float(estimates.mean()) - float(exact.detach())) < 4 * standard_error
    # Where no gradients are recorded (evaluation), the trace is exact.
    with torch.no_grad():
        _, evaluated = estimated(x[:5])
    torch.testing.assert_close(evaluated, exact.detach().expand(5), atol=1e-10, rtol=1e-10)


def test_density_integrates_to_one_on_a_grid():
    bijector = _flow(2, rtol=1e-7, atol=1e-7)
    flow = Flow(StandardNormal((2,)), bijector).double()
    edge, count = 7.0, 141
    axis = torch.linspace(-edge, edge, count, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    mass = float(density.sum()) * (axis[1] - axis[0]) ** 2
    assert abs(mass - 1) < 0.01, mass
    # The map is not the identity, so the check is not the base's own mass.
    with torch.no_grad():
        assert float((bijector(grid[:50])[0] - grid[:50]).abs().max()) > 0.1


def test_adjoint_gradients_match_backpropagation():
    x = torch.randn(6, 2, dtype=torch.float64)
    gradients = []
    for adjoint in (False, True):
        flow = _flow(2, rtol=1e-9, atol=1e-9, adjoint=adjoint)
        z, log_abs_det = flow(x)
        (z.pow(2).sum() + log_abs_det.sum()).backward()
        gradients.append([p.grad.clone() for p in flow.parameters()])
    for direct, adjoint in zip(*gradients):
        torch.testing.assert_close(adjoint, direct, atol=1e-6, rtol=1e-6)


def test_linear_field_closed_forms():
    rate, features = 0.7, 3
    flow = ContinuousFlow(LinearField(rate), features=features, rtol=1e-10, atol=1e-10)
    x = torch.randn(4, features, dtype=torch.float64)
    z, log_abs_det, kinetic, jacobian = flow.regularized_forward(x)
    torch.testing.assert_close(z, x * math.exp(rate))
    torch.testing.assert_close(log_abs_det, torch.full((4,), rate * features, dtype=x.dtype))
    expected_kinetic = rate**2 * x.pow(2).sum(-1) * (math.exp(2 * rate) - 1) / (2 * rate)
    torch.testing.assert_close(kinetic, expected_kinetic)
    # A Rademacher probe has squared norm D, so the estimate of |J|_F^2 = a^2 D is exact.
    torch.testing.assert_close(jacobian, torch.full((4,), rate**2 * features, dtype=x.dtype))
    # Integrating back, from t1 to t0, undoes the map.
    x_back, inverse_log_abs_det = flow.inverse(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


@pytest.mark.parametrize("sigma_min, t0, t1", [(0.0, 0.0, 1.0), (0.1, 0.0, 1.0), (0.05, 1.0, 3.0)])
def test_flow_matching_loss_vanishes_at_the_exact_field(sigma_min, t0, t1):
    mass = torch.tensor([1.5, -0.5], dtype=torch.float64)
    field = PointMassField(mass, sigma_min, t0, t1)
    flow = ContinuousFlow(field, features=2, t0=t0, t1=t1)
    x = mass.expand(64, 2)
    noise = torch.randn(64, 2, dtype=torch.float64)
    time = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    loss = flow.flow_matching_loss(x, noise, sigma_min=sigma_min, time=time)
    assert float(loss.max()) < 1e-20
    # The field of the other time direction (noise at t0) is not the optimum.
    reversed_field = PointMassField(mass, sigma_min, t1, t0)
    wrong = ContinuousFlow(reversed_field, features=2, t0=t0, t1=t1)
    assert float(wrong.flow_matching_loss(x, noise, sigma_min=sigma_min, time=time).mean()) > 0.1


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(features=0), "features"),
        (dict(features=2, t1=0.0), "t0 != t1"),
        (dict(features=2, trace="stochastic"), "trace"),
        (dict(features=2, rtol=0.0), "rtol"),
        (dict(features=2, step_size=2.0), "step_size"),
    ],
)
def test_bad_settings_are_named(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        ContinuousFlow(VectorFieldMLP(2, (4,)), **options)


def test_inputs_and_context_are_checked():
    field = VectorFieldMLP(2, (4,), context_features=3)
    flow = ContinuousFlow(field, features=2, method="euler", context_features=3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\), got \(4, 3\)"):
        flow(torch.randn(4, 3))
    with pytest.raises(ValueError, match="context of 3 features, got None"):
        flow(torch.randn(4, 2))
    with pytest.raises(ValueError, match="noise of the data's shape"):
        flow.flow_matching_loss(torch.randn(4, 2), torch.randn(4, 3), torch.randn(4, 3))


def test_missing_torchdiffeq_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)
    flow = ContinuousFlow(VectorFieldMLP(2, (4,)), features=2)
    with pytest.raises(ImportError, match=r'pip install "flowkit-torch\[cnf\]"'):
        flow(torch.randn(3, 2))


def test_flowkit_imports_without_torchdiffeq():
    code = (
        "import sys; sys.modules['torchdiffeq'] = None; import flowkit, flowkit.presets; "
        "flowkit.presets.cnf(2, hidden_features=(4,)); print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
