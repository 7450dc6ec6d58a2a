"""ResidualBlock: fixed-point inverse, the unbiased log-determinant estimator and its gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from flowkit.bijectors import FixedPointError, ResidualBlock
from flowkit.nn import LipschitzConvNet, LipschitzMLP, refresh_spectral_norm
from flowkit.testing.strategies import seeds

# Draws of the stochastic estimators averaged in the unbiasedness tests; a mean then lies within
# Z standard errors of the exact value unless the estimator is biased.
DRAWS = 1000
Z = 4.5


def _block(features: int, seed: int, coefficient: float = 0.95, **options) -> ResidualBlock:
    """A block whose Jacobian is far from zero: weights scaled up, then normalised to ``c``."""
    torch.manual_seed(seed)
    network = LipschitzMLP(features, (16,), coefficient=coefficient, activation="elu").double()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(4)
    refresh_spectral_norm(network)
    return ResidualBlock(network, seed=seed, **options).double()


def _draws(block: ResidualBlock, x: torch.Tensor, method: str) -> torch.Tensor:
    block.log_det = method
    with torch.no_grad():
        return torch.stack([block(x)[1] for _ in range(DRAWS)])


@given(seed=seeds(), features=st.integers(1, 5), scale=st.floats(0.1, 10.0))
def test_fixed_point_round_trip(seed, features, scale) -> None:
    block = _block(features, seed, coefficient=0.97, log_det="exact")
    x = scale * torch.randn(7, features, generator=torch.Generator().manual_seed(seed)).double()
    with torch.no_grad():
        z, log_abs_det = block(x)
        back, inverse_log_abs_det = block.inverse(z)
    torch.testing.assert_close(back, x, atol=1e-9 * (1 + scale), rtol=0)
    torch.testing.assert_close(inverse_log_abs_det, -log_abs_det)


def test_inverse_raises_when_not_a_contraction() -> None:
    expanding = nn.Linear(2, 2)
    with torch.no_grad():
        expanding.weight.copy_(torch.tensor([[-3.0, 0.0], [0.0, -3.0]]))
    block = ResidualBlock(expanding, log_det="exact", max_iter=20, seed=0)
    with pytest.raises(FixedPointError, match="did not converge in 20 iterations"):
        block.inverse(torch.ones(3, 2))
    # A stated tolerance that the contraction cannot reach in the allowed steps also raises.
    slow = _block(2, seed=0, coefficient=0.97, log_det="exact", atol=1e-300, max_iter=5)
    with pytest.raises(FixedPointError, match="atol 1e-300"):
        slow.inverse(torch.randn(3, 2).double())


@pytest.mark.parametrize("method", ["russian_roulette", "neumann"])
def test_series_estimator_is_unbiased(method) -> None:
    block = _block(3, seed=1, log_det="exact")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        exact = block(x)[1]
    assert float(exact.abs().min()) > 0.1  # a log-determinant worth estimating
    draws = _draws(block, x, method)
    standard_error = draws.std(0) / DRAWS**0.5
    error = (draws.mean(0) - exact).abs()
    assert bool((error < Z * standard_error).all()), (error, standard_error)
    # The check has the power to see a bias of 0.1 nats.
    assert bool(((draws.mean(0) - exact - 0.1).abs() > Z * standard_error).all())


@pytest.mark.parametrize("method", ["russian_roulette", "neumann"])
def test_gradient_estimator_is_unbiased(method) -> None:
    block = _block(2, seed=2, log_det="exact")
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(2)).double().requires_grad_(True)
    parameters = [x, *[p for p in block.parameters() if p.dim() == 2]]

    def gradient() -> torch.Tensor:
        _, log_abs_det = block(x)
        return torch.cat([g.flatten() for g in torch.autograd.grad(log_abs_det.sum(), parameters)])

    exact = gradient()
    block.log_det = method
    draws = torch.stack([gradient() for _ in range(DRAWS // 2)])
    standard_error = draws.std(0) / (DRAWS // 2) ** 0.5 + 1e-12
    z_scores = (draws.mean(0) - exact).abs() / standard_error
    assert float(z_scores.max()) < Z + 0.5, float(z_scores.max())


def test_estimator_draws_from_its_own_generator() -> None:
    x = torch.randn(5, 3).double()
    first, second = _block(3, seed=3), _block(3, seed=3)
    state = torch.get_rng_state()
    with torch.no_grad():
        values = [first(x)[1] for _ in range(3)]
        again = [second(x)[1] for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(values, again))
    assert not torch.equal(values[0], values[1])


def test_evaluation_mode_uses_the_exact_log_det() -> None:
    block = _block(3, seed=4)
    x = torch.randn(6, 3).double()
    block.eval()
    with torch.no_grad():
        evaluated = block(x)[1]
    block.train()
    block.log_det = "exact"
    with torch.no_grad():
        exact = block(x)[1]
    torch.testing.assert_close(evaluated, exact)


def test_image_block_round_trip_and_estimate() -> None:
    torch.manual_seed(5)
    network = LipschitzConvNet(2, 4, input_size=(2, 2), coefficient=0.9).double()
    block = ResidualBlock(network, event_rank=3, seed=5).double()
    x = torch.randn(3, 2, 2, 2).double()
    with torch.no_grad():
        z, log_abs_det = block(x)
        back, _ = block.inverse(z)
    assert log_abs_det.shape == (3,)
    torch.testing.assert_close(back, x)


def test_errors() -> None:
    network = LipschitzMLP(2, (4,))
    with pytest.raises(ValueError, match="log_det in"):
        ResidualBlock(network, log_det="hutchinson")
    with pytest.raises(ValueError, match="geometric_p"):
        ResidualBlock(network, geometric_p=1.0)
    with pytest.raises(TypeError, match="nn.Module network"):
        ResidualBlock(lambda x: x)  # type: ignore[arg-type]
    block = ResidualBlock(network, event_rank=3)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        block(torch.randn(4, 2))
