"""AIS transitions: each leaves its intermediate distribution invariant; rejected chains stay."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from flowkit.variational.transitions import ChainState, Intermediate, transition

TRANSITIONS = ["hmc", "mala", "metropolis"]
MEAN, SCALE = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 2.0])


def _state(x: Tensor, gradient: bool) -> ChainState:
    """q = N(0, I) and p = N(MEAN, SCALE^2), both log-densities up to constants."""
    scale = SCALE.to(x.dtype)
    log_q, log_p = -0.5 * x.square().sum(-1), -0.5 * ((x - MEAN) / scale).square().sum(-1)
    if not gradient:
        return ChainState(x, log_q, log_p, None, None)
    return ChainState(x, log_q, log_p, -x, -(x - MEAN) / scale**2)


@pytest.mark.parametrize("transition_kind", TRANSITIONS)
def test_chains_started_at_the_target_stay_distributed_as_the_target(transition_kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    count = 20_000
    x = MEAN + SCALE.double() * torch.randn(count, 2, generator=generator, dtype=torch.float64)
    gradient = transition_kind != "metropolis"
    state = _state(x, gradient)
    # beta = 1, power = 1: the intermediate distribution is p itself.
    target = Intermediate(beta=1.0, power=1.0, max_gradient=None)
    rates = []
    for _ in range(5):
        state, rate = transition(
            transition_kind, state, target, 0.4, _state, leapfrog_steps=3, generator=generator
        )
        rates.append(rate)
    assert min(rates) > 0.2
    moved = (state.x != x).any(-1).double().mean()
    assert moved > 0.5
    # Standard errors: 0.5 / sqrt(20000) = 0.0035 and 2 / sqrt(20000) = 0.014 (chains correlate).
    assert torch.allclose(state.x.mean(0), MEAN, atol=0.06)
    assert torch.allclose(state.x.std(0), SCALE.double(), rtol=0.04)


def test_where_takes_accepted_chains_from_the_proposal_and_keeps_the_rest() -> None:
    current = _state(torch.zeros(3, 2, dtype=torch.float64), True)
    proposed = _state(torch.ones(3, 2, dtype=torch.float64), True)
    accept = torch.tensor([True, False, True])
    chosen = current.where(accept, proposed)
    assert chosen.x[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(chosen.log_p, torch.where(accept, proposed.log_p, current.log_p))
    assert chosen.grad_p is not None
    assert torch.equal(chosen.grad_p[1], current.grad_p[1])
    assert torch.equal(chosen.grad_q[0], proposed.grad_q[0])


def test_intermediate_is_zero_off_the_support_and_its_gradient_is_clamped() -> None:
    x = torch.tensor([[0.0, 0.0], [30.0, 0.0]], dtype=torch.float64)
    state = _state(x, True)
    state.log_p[0] = float("nan")
    target = Intermediate(beta=0.5, power=2.0, max_gradient=10.0)
    density = target.log_density(state)
    assert density[0] == float("-inf")
    assert torch.equal(density[1:], state.log_p[1:])  # power * beta = 1: log pi = log p
    assert target.gradient(state).abs().max() == 10.0
