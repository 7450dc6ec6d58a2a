"""The objectives' values and gradients against closed forms for Gaussians."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import integrate, stats

from flowkit.variational import (
    alpha_2_loss,
    effective_sample_size,
    log_prob_detached,
    reverse_kl_loss,
)
from flowkit.variational.targets import Gaussian
from tests.variational.helpers import gaussian_flow, gaussian_kl, log_one_plus_chi_square


def _gradients(flow, loss: torch.Tensor) -> torch.Tensor:
    parameters = [flow.bijector.shift, flow.bijector.log_scale]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters)])


def _reverse_kl(flow, target, count: int, path: bool) -> torch.Tensor:
    x, log_q = flow.sample_and_log_prob(count)
    log_q = log_prob_detached(flow, x) if path else log_q
    return reverse_kl_loss(log_q, target(x))


def test_path_gradient_is_exactly_zero_per_sample_when_the_flow_is_the_target() -> None:
    # Sticking the landing: at q = p every sample's path gradient vanishes, while the
    # reparameterised estimator keeps the score term, zero only in expectation.
    mean, scale = [0.3, -1.2], [0.8, 1.5]
    flow, target = gaussian_flow(mean, scale), Gaussian(mean, scale)
    for _ in range(3):
        path = _gradients(flow, _reverse_kl(flow, target, 1, path=True))
        torch.testing.assert_close(path, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    reparameterised = _gradients(flow, _reverse_kl(flow, target, 1, path=False))
    assert float(reparameterised.abs().max()) > 1e-3


@pytest.mark.parametrize("kind", ["linear", "coupling"])
def test_path_gradient_vanishes_for_any_flow_whose_target_is_its_frozen_copy(kind: str) -> None:
    from flowkit.bijectors import Affine, Compose, LULinear
    from flowkit.distributions import Flow, StandardNormal
    from flowkit.presets.tabular import realnvp_tabular

    if kind == "linear":
        bijector = Compose(LULinear(3, seed=0), Affine(shape=(3,), shift=0.3, event_rank=1))
        flow = Flow(StandardNormal((3,)), bijector).double()
    else:
        flow = realnvp_tabular(3, transforms=3, hidden_features=(8,), normalization=None, seed=0)
        flow = flow.double()
        with torch.no_grad():  # away from the zero-initialised identity
            for parameter in flow.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    frozen = copy.deepcopy(flow).requires_grad_(False)
    with torch.no_grad():  # fills the linear maps' caches of derived weights, keyed on parameters
        flow.log_prob(torch.zeros(1, 3, dtype=torch.float64))
    parameters = [p for p in flow.parameters() if p.requires_grad]
    x, log_q = flow.sample_and_log_prob(16)
    path = torch.autograd.grad(
        reverse_kl_loss(log_prob_detached(flow, x), frozen.log_prob(x)), parameters
    )
    assert max(float(g.abs().max()) for g in path) < 1e-10
    x, log_q = flow.sample_and_log_prob(16)
    score = torch.autograd.grad(reverse_kl_loss(log_q, frozen.log_prob(x)), parameters)
    assert max(float(g.abs().max()) for g in score) > 1e-4


@pytest.mark.parametrize("path", [False, True], ids=["reparameterised", "path"])
def test_reverse_kl_gradient_is_unbiased(path: bool) -> None:
    mean_p, scale_p = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5])
    flow = gaussian_flow([0.0, 0.0], [1.5, 0.8])
    target = Gaussian(mean_p.tolist(), scale_p.tolist())
    # The exact gradient of KL(q || p) in the flow's parameters, by autograd through the closed
    # form: the flow is x = (z - b) e^{-s}, so q's mean is -b e^{-s} and its scale e^{-s}.
    shift, log_scale = flow.bijector.shift, flow.bijector.log_scale
    scale_q = torch.exp(-log_scale)
    exact_kl = gaussian_kl(-shift * scale_q, scale_q, mean_p.double(), scale_p.double())
    exact = _gradients(flow, exact_kl)
    chunks = torch.stack(
        [_gradients(flow, _reverse_kl(flow, target, 5000, path)) for _ in range(20)]
    )
    estimate = chunks.mean(0)
    standard_error = chunks.std(0) / math.sqrt(chunks.shape[0])
    assert bool((standard_error > 0).all())
    assert bool(((estimate - exact).abs() < 5 * standard_error + 1e-9).all()), (estimate, exact)


def test_reverse_kl_loss_estimates_kl_minus_log_z() -> None:
    mean_q, scale_q, mean_p, scale_p = [0.2, 0.0], [1.0, 2.0], [0.0, 1.0], [1.5, 1.0]
    flow, target = gaussian_flow(mean_q, scale_q), Gaussian(mean_p, scale_p)
    with torch.no_grad():
        loss = float(_reverse_kl(flow, target, 200_000, path=False))
    exact = float(
        gaussian_kl(
            *(torch.tensor(v, dtype=torch.float64) for v in (mean_q, scale_q, mean_p, scale_p))
        )
    )
    assert loss == pytest.approx(exact - target.log_z, abs=0.02)


def test_closed_form_of_chi_square_matches_quadrature() -> None:
    # The reference used below, checked once in 1-D against scipy's quadrature.
    mq, sq, mp, sp = -0.2, 1.1, 0.3, 0.7
    numeric, _ = integrate.quad(
        lambda x: stats.norm.pdf(x, mp, sp) ** 2 / stats.norm.pdf(x, mq, sq), -30, 30
    )
    closed_form = log_one_plus_chi_square(
        *(torch.tensor([v], dtype=torch.float64) for v in (mq, sq, mp, sp))
    )
    assert float(closed_form) == pytest.approx(math.log(numeric))


def test_alpha_2_loss_matches_its_closed_form_for_gaussians() -> None:
    # log E_q[w^2] = 2 log Z + log(1 + chi^2(p || q)) for the unnormalised Gaussian target.
    mean_q, scale_q, mean_p, scale_p = [0.0, 1.0], [1.5, 1.2], [0.4, 0.6], [1.0, 1.0]
    flow, target = gaussian_flow(mean_q, scale_q), Gaussian(mean_p, scale_p)
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob(400_000)
        log_weights = target(x) - log_q
    loss = float(alpha_2_loss(log_weights))
    exact = 2 * target.log_z + float(
        log_one_plus_chi_square(
            *(torch.tensor(v, dtype=torch.float64) for v in (mean_q, scale_q, mean_p, scale_p))
        )
    )
    # The delta-method standard error of log mean(w^2).
    squared = torch.exp(2 * (log_weights - log_weights.max()))
    standard_error = float(squared.std() / (squared.mean() * math.sqrt(squared.numel())))
    assert abs(loss - exact) < 5 * standard_error + 1e-9
    assert standard_error < 0.01


def test_self_normalised_alpha_2_gradient_is_consistent() -> None:
    mean_p, scale_p = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5])
    flow = gaussian_flow([0.0, 0.0], [1.5, 0.8])
    target = Gaussian(mean_p.tolist(), scale_p.tolist())
    # The exact gradient of log E_q[w^2] = 2 log Z + log(1 + chi^2(p || q)): only the second term
    # depends on the flow (q's mean is -b e^{-s}, its scale e^{-s}).
    shift, log_scale = flow.bijector.shift, flow.bijector.log_scale
    scale_q = torch.exp(-log_scale)
    exact = _gradients(
        flow, log_one_plus_chi_square(-shift * scale_q, scale_q, mean_p.double(), scale_p.double())
    )

    def estimate(count: int) -> torch.Tensor:
        x, log_q = flow.sample_and_log_prob(count)
        log_weights = target(x) - log_q
        loss = alpha_2_loss(log_weights, flow.log_prob(x.detach()))
        assert float(loss.detach()) == pytest.approx(
            float(alpha_2_loss(log_weights.detach())), rel=1e-12
        )
        return _gradients(flow, loss)

    chunks = torch.stack([estimate(5000) for _ in range(20)])
    mean = chunks.mean(0)
    standard_error = chunks.std(0) / math.sqrt(chunks.shape[0])
    # A ratio estimator: its bias, of order 1/5000, is well below the standard error here.
    assert bool(((mean - exact).abs() < 5 * standard_error + 1e-9).all()), (mean, exact)


def test_reparameterised_alpha_2_gradient_weights_samples_by_their_squared_weights() -> None:
    log_weights = torch.tensor([0.0, math.log(2.0), math.log(3.0)], requires_grad=True)
    (gradient,) = torch.autograd.grad(alpha_2_loss(log_weights), log_weights)
    torch.testing.assert_close(gradient, 2 * torch.tensor([1.0, 4.0, 9.0]) / 14)
    with pytest.raises(ValueError, match="log_q of the weights' shape"):
        alpha_2_loss(log_weights, torch.zeros(2))


def test_effective_sample_size_against_the_weights() -> None:
    weights = torch.rand(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = weights.sum() ** 2 / weights.square().sum()
    torch.testing.assert_close(effective_sample_size(weights.log() - 700.0), expected)
    assert float(effective_sample_size(torch.tensor([0.0, 0.0, -math.inf, -math.inf]))) == 2.0
