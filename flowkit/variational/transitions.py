"""Markov transitions of annealed importance sampling: random walk, MALA and HMC."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ChainState", "Intermediate", "transition"]


@dataclass
class ChainState:
    """The chains: positions, both log-densities and (for gradient transitions) their gradients.

    Attributes:
        x: Positions, shape ``(N, dim)``.
        log_q: The flow's log-density at ``x``, shape ``(N,)``.
        log_p: The target's unnormalised log-density at ``x``, shape ``(N,)``.
        grad_q: Gradient of ``log_q`` in ``x`` (None for the random walk).
        grad_p: Gradient of ``log_p`` in ``x`` (None for the random walk).
    """

    x: Tensor
    log_q: Tensor
    log_p: Tensor
    grad_q: Tensor | None
    grad_p: Tensor | None

    def where(self, accept: Tensor, other: ChainState) -> ChainState:
        """Each chain from ``other`` where ``accept`` (shape ``(N,)``) holds, else from this."""
        mask = accept[:, None]

        def pick(mine: Tensor | None, theirs: Tensor | None) -> Tensor | None:
            if mine is None or theirs is None:
                return None
            return torch.where(mask, theirs, mine)

        return ChainState(
            torch.where(mask, other.x, self.x),
            torch.where(accept, other.log_q, self.log_q),
            torch.where(accept, other.log_p, self.log_p),
            pick(self.grad_q, other.grad_q),
            pick(self.grad_p, other.grad_p),
        )


@dataclass(frozen=True)
class Intermediate:
    r"""The intermediate distribution :math:`\log \pi = \log q + a \beta (\log \tilde p - \log q)`.

    Args:
        beta: :math:`\beta`, its place on the path from :math:`q` (0) to the final one (1).
        power: :math:`a` in the final distribution :math:`\tilde p^a q^{1-a}`.
        max_gradient: Clamp of each coordinate of :math:`\nabla \log \pi` (None: no clamp).
    """

    beta: float
    power: float
    max_gradient: float | None

    def log_density(self, state: ChainState) -> Tensor:
        r""":math:`\log \pi` at the chains' positions, ``-inf`` off the support."""
        value = state.log_q + self.power * self.beta * (state.log_p - state.log_q)
        # Off the support (a log-density -inf or NaN) the intermediate density is zero.
        return torch.nan_to_num(value, nan=-math.inf, posinf=-math.inf)

    def gradient(self, state: ChainState) -> Tensor:
        r""":math:`\nabla \log \pi` at the chains' positions, non-finite entries zeroed."""
        assert state.grad_q is not None and state.grad_p is not None
        mix = self.power * self.beta
        gradient = (1 - mix) * state.grad_q + mix * state.grad_p
        gradient = torch.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)
        limit = self.max_gradient
        return gradient if limit is None else gradient.clamp(-limit, limit)


def transition(
    kind: str,
    state: ChainState,
    target: Intermediate,
    step: float,
    evaluate: Callable[[Tensor, bool], ChainState],
    *,
    leapfrog_steps: int,
    generator: torch.Generator | None,
) -> tuple[ChainState, float]:
    r"""One Metropolis-Hastings transition of every chain leaving ``target`` invariant.

    Args:
        kind: ``"metropolis"`` (random walk :math:`x' = x + \epsilon \xi`), ``"mala"``
            (:math:`x' = x + \frac{\epsilon^2}{2} \nabla \log \pi(x) + \epsilon \xi`) or
            ``"hmc"`` (``leapfrog_steps`` leapfrog steps, unit mass).
        state: The chains before the transition.
        target: The intermediate distribution :math:`\pi`.
        step: The step size :math:`\epsilon`.
        evaluate: ``(x, gradient) -> ChainState``: both log-densities at proposed positions,
            with their gradients when ``gradient`` is True.
        leapfrog_steps: Leapfrog steps of an HMC transition.
        generator: Source of the draws (None: torch's global generator).

    Returns:
        The chains after the transition and the mean acceptance probability.
    """
    noise = _normal(state.x, generator)
    current = target.log_density(state)
    if kind == "metropolis":
        proposed = evaluate(state.x + step * noise, False)
        log_ratio = target.log_density(proposed) - current
    elif kind == "mala":
        drift = 0.5 * step**2 * target.gradient(state)
        proposed = evaluate(state.x + drift + step * noise, True)
        back = 0.5 * step**2 * target.gradient(proposed)
        forward_log = -0.5 * noise.square().sum(-1)
        reverse = (state.x - proposed.x - back) / step
        log_ratio = (
            target.log_density(proposed) - current - 0.5 * reverse.square().sum(-1) - forward_log
        )
    else:
        proposed, momentum = _leapfrog(state, noise, target, step, evaluate, leapfrog_steps)
        log_ratio = (
            target.log_density(proposed)
            - 0.5 * momentum.square().sum(-1)
            - current
            + 0.5 * noise.square().sum(-1)
        )
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=-math.inf)
    uniform = _uniform(log_ratio, generator)
    accept = uniform.log() < log_ratio
    mean_acceptance = float(log_ratio.clamp(max=0.0).exp().mean())
    return state.where(accept, proposed), mean_acceptance


def _leapfrog(
    state: ChainState,
    momentum: Tensor,
    target: Intermediate,
    step: float,
    evaluate: Callable[[Tensor, bool], ChainState],
    steps: int,
) -> tuple[ChainState, Tensor]:
    momentum = momentum + 0.5 * step * target.gradient(state)
    for index in range(steps):
        state = evaluate(state.x + step * momentum, True)
        kick = step if index < steps - 1 else 0.5 * step
        momentum = momentum + kick * target.gradient(state)
    return state, momentum


def _normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = like.device if generator is None else generator.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = like.device if generator is None else generator.device
    draws = torch.rand(like.shape, generator=generator, device=device, dtype=like.dtype)
    return draws.to(like.device)
