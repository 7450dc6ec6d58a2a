"""Annealed importance sampling from a flow to a target along the geometric path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from flowkit._checks import check_bool, check_choice, check_float, check_int
from flowkit.distributions.flow import Flow
from flowkit.variational._checks import LogTarget, call_target, check_flow_and_target
from flowkit.variational.sampling import ImportanceResult, _summarise
from flowkit.variational.transitions import ChainState, Intermediate, transition

__all__ = ["AISConfig", "AISResult", "AnnealedImportanceSampler", "ais"]

# The schedules of AISConfig.spacing and the transitions of AISConfig.transition.
SPACINGS = ("linear", "geometric")
TRANSITIONS = ("hmc", "mala", "metropolis")
# Geometric spacing as in FAB's code (after Neal's AIS paper): a quarter of the intermediate
# distributions evenly in [0, 0.01], the rest geometrically spaced from 0.01 to 1.
GEOMETRIC_START = 0.01
# Step-size adaptation multiplies or divides a step size by this after each run (FAB's factor).
ADAPTATION_FACTOR = 1.05
# The largest change of log(step size) that one run's proportional adaptation may make: a factor
# of e either way, so that one run whose chains all fail to move cannot shrink a step to nothing.
MAX_LOG_STEP_CHANGE = 1.0


@dataclass(frozen=True)
class AISConfig:
    r"""Settings of annealed importance sampling (:class:`AnnealedImportanceSampler`).

    The chain moves through :math:`\log \pi_\beta = (1 - \beta) \log q + \beta \log \tilde p`
    at :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K < \beta_{K+1} = 1`, one transition
    (or ``transitions_per_distribution``) at each of the :math:`K` intermediate distributions.

    Args:
        num_intermediate: :math:`K`, the number of intermediate distributions (>= 1); None: 1,
            or the length of ``betas`` when given.
        spacing: ``"linear"`` (:math:`\beta_k = k / (K + 1)`) or ``"geometric"`` (FAB's: a
            quarter of the :math:`\beta_k` evenly in :math:`[0, 0.01]`, the rest geometrically
            spaced from 0.01 to 1).
        betas: The intermediate :math:`\beta_1 < \dots < \beta_K`, strictly inside (0, 1); they
            replace ``spacing``.
        transition: ``"hmc"`` (Hamiltonian Monte Carlo, unit mass), ``"mala"``
            (Metropolis-adjusted Langevin: proposal
            :math:`x' = x + \frac{\epsilon^2}{2} \nabla \log \pi(x) + \epsilon \xi`) or
            ``"metropolis"`` (random walk :math:`x' = x + \epsilon \xi`, no gradients).
        step_size: The initial step size :math:`\epsilon` of every intermediate distribution.
        leapfrog_steps: Leapfrog steps of one HMC transition.
        transitions_per_distribution: Metropolis-Hastings transitions at each intermediate
            distribution, each with a step size of its own.
        adapt_step_size: After each run, adapt each step size (each intermediate distribution's,
            each transition's) towards ``target_acceptance`` by the run's mean acceptance
            probability :math:`\bar a` there, as ``adaptation_rate`` says. Each run uses the
            step sizes fixed before it, so its weights stay unbiased.
        target_acceptance: The acceptance probability the adaptation aims at.
        adaptation_rate: None: FAB's rule, multiply the step size by 1.05 where
            :math:`\bar a` exceeded ``target_acceptance`` and divide it by 1.05 elsewhere (from
            a step size ten times too large, 47 runs to get back). A rate :math:`\gamma > 0`:
            the proportional (Robbins-Monro) rule
            :math:`\log \epsilon \leftarrow \log \epsilon + \gamma (\bar a - a^*)` with
            :math:`a^*` the ``target_acceptance``, each change capped at a factor of :math:`e`:
            large steps while the acceptance is far from the target, small ones near it.
        max_gradient: Clamp each coordinate of :math:`\nabla \log \pi` to this magnitude inside
            the proposals (FAB's 1000; None: no clamp). The Metropolis-Hastings test uses the
            exact density, so the chain stays exact.

    Example:
        >>> AISConfig(num_intermediate=3).betas_schedule().tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """

    num_intermediate: int | None = None
    spacing: str = "linear"
    betas: Sequence[float] | None = None
    transition: str = "hmc"
    step_size: float = 1.0
    leapfrog_steps: int = 5
    transitions_per_distribution: int = 1
    adapt_step_size: bool = True
    target_acceptance: float = 0.65
    adaptation_rate: float | None = None
    max_gradient: float | None = 1e3

    def __post_init__(self) -> None:
        owner = "AISConfig"
        check_int(owner, "num_intermediate", self.num_intermediate, 1, optional=True)
        check_choice(owner, "spacing", self.spacing, SPACINGS)
        check_choice(owner, "transition", self.transition, TRANSITIONS)
        check_float(owner, "step_size", self.step_size, 0.0, exclusive_minimum=True)
        check_int(owner, "leapfrog_steps", self.leapfrog_steps, 1)
        check_int(owner, "transitions_per_distribution", self.transitions_per_distribution, 1)
        check_bool(owner, "adapt_step_size", self.adapt_step_size)
        check_float(
            owner,
            "target_acceptance",
            self.target_acceptance,
            0.0,
            1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        check_float(
            owner,
            "adaptation_rate",
            self.adaptation_rate,
            0.0,
            exclusive_minimum=True,
            optional=True,
        )
        check_float(
            owner, "max_gradient", self.max_gradient, 0.0, exclusive_minimum=True, optional=True
        )
        if self.betas is not None:
            betas = [check_float(owner, "each of betas", b, 0.0, 1.0) for b in self.betas]
            inside = all(0.0 < b < 1.0 for b in betas)
            increasing = all(a < b for a, b in zip(betas, betas[1:], strict=False))
            if not betas or not inside or not increasing:
                raise ValueError(
                    f"{owner} expects betas as a non-empty, strictly increasing sequence inside "
                    f"(0, 1), got {betas}"
                )
            if self.num_intermediate is not None and self.num_intermediate != len(betas):
                raise ValueError(
                    f"{owner}: num_intermediate ({self.num_intermediate}) differs from the "
                    f"number of betas ({len(betas)}); give one of them"
                )
            object.__setattr__(self, "betas", tuple(betas))

    @property
    def intermediate_count(self) -> int:
        """:math:`K`, the number of intermediate distributions."""
        if self.betas is not None:
            return len(self.betas)
        return 1 if self.num_intermediate is None else self.num_intermediate

    def betas_schedule(self) -> Tensor:
        r"""The whole schedule :math:`(\beta_0 = 0, \beta_1, \dots, \beta_K, 1)`, float64."""
        count = self.intermediate_count
        if self.betas is not None:
            inner = torch.tensor(self.betas, dtype=torch.float64)
            ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
            return torch.cat([ends[:1], inner, ends[1:]])
        if self.spacing == "linear":
            return torch.linspace(0.0, 1.0, count + 2, dtype=torch.float64)
        evenly = count // 4
        start = torch.linspace(0.0, GEOMETRIC_START, evenly + 2, dtype=torch.float64)[:-1]
        rest = torch.logspace(
            math.log10(GEOMETRIC_START), 0.0, count - evenly + 1, dtype=torch.float64
        )
        return torch.cat([start, rest])


@dataclass(frozen=True)
class AISResult(ImportanceResult):
    r"""What :func:`ais` returns: an :class:`~flowkit.variational.ImportanceResult` of the chains.

    ``samples`` are the chains' final states, ``log_weights`` their AIS log-weights (unbiased:
    :math:`E[w] = Z`), and ``log_z``, ``ess`` and the rest summarise them as for
    :func:`~flowkit.variational.importance`; :func:`~flowkit.variational.expectation` takes it.

    Attributes:
        log_q: The flow's :math:`\log q` at the final samples, shape ``(N,)``.
        flow_log_weights: :math:`\log \tilde p - \log q` at the chains' starting points, the
            flow's own importance weights, shape ``(N,)``.
        acceptance: Mean acceptance probability of each transition, shape
            ``(K, transitions_per_distribution)``.
        step_sizes: The step sizes the run used, shape ``(K, transitions_per_distribution)``.
    """

    log_q: Tensor
    flow_log_weights: Tensor
    acceptance: Tensor
    step_sizes: Tensor


class AnnealedImportanceSampler:
    r"""Annealed importance sampling (AIS) from a flow :math:`q` to :math:`\tilde p^a q^{1-a}`.

    Each chain starts at :math:`x_0 \sim q` and moves through the intermediate distributions
    :math:`\log \pi_k = \log q + a \beta_k (\log \tilde p - \log q)` by transitions that leave
    :math:`\pi_k` invariant; its log-weight is

    .. math::
        \log w = \sum_{k=0}^{K} \big(\log \pi_{k+1}(x_k) - \log \pi_k(x_k)\big)
        = \sum_{k=0}^{K} a (\beta_{k+1} - \beta_k) \big(\log \tilde p(x_k) - \log q(x_k)\big),

    with :math:`x_k` the state after the transition at :math:`\pi_k`, so that :math:`E[w]` is
    the final distribution's normalising constant (:math:`Z` for :math:`a = 1`). The power
    :math:`a = 2` gives :math:`\tilde p^2 / q`, the target of FAB's loss. The sampler keeps the
    adapted step sizes from run to run; the flow is read, never trained.

    Chains run as one batch; draws come from ``generator`` when one is given (the flow's base
    draws then run under a fork of torch's global state seeded from it, which is restored), or
    from torch's global generator.

    Args:
        flow: The proposal :math:`q`, an unconditional :class:`~flowkit.distributions.Flow`.
        log_target: Callable ``x -> log p~(x)``, shape ``(batch,)``; differentiable for
            ``"hmc"`` and ``"mala"``.
        config: The schedule and transitions; None for :class:`AISConfig`'s defaults.

    References:
        Neal, Annealed importance sampling (Statistics and Computing, 2001);
        Midgley et al., Flow Annealed Importance Sampling Bootstrap (ICLR 2023).

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1))
        >>> sampler = AnnealedImportanceSampler(flow, Gaussian([1.0, 0.0], [1.0, 2.0]))
        >>> result = sampler.sample(256, generator=torch.Generator().manual_seed(0))
        >>> result.samples.shape, result.acceptance.shape
        (torch.Size([256, 2]), torch.Size([1, 1]))
    """

    def __init__(self, flow: Flow, log_target: LogTarget, config: AISConfig | None = None) -> None:
        owner = "AnnealedImportanceSampler"
        self.flow = check_flow_and_target(owner, flow, log_target)
        if flow.context_shape is not None:
            raise ValueError(f"{owner} samples unconditional flows; this one takes a context")
        if config is None:
            config = AISConfig()
        if not isinstance(config, AISConfig):
            raise TypeError(f"{owner} expects config as an AISConfig, got {type(config).__name__}")
        self.log_target = log_target
        self.config = config
        self.betas = config.betas_schedule()
        self.step_sizes = torch.full(
            (config.intermediate_count, config.transitions_per_distribution),
            config.step_size,
            dtype=torch.float64,
        )

    def sample(
        self,
        num_chains: int,
        *,
        power: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> AISResult:
        r"""Run ``num_chains`` chains; adapt the step sizes afterwards if the config says so.

        Args:
            num_chains: Number of chains ``N`` (>= 1).
            power: :math:`a` in the final distribution :math:`\tilde p^a q^{1-a}`: 1 for the
                target, 2 for FAB's :math:`\tilde p^2 / q`.
            generator: Source of every random draw (None: torch's global generator).

        Raises:
            ValueError: The target returns the wrong shape, NaN or ``+inf`` at the flow's
                samples, or is not differentiable for a gradient transition; the flow's samples
                are not finite.
        """
        owner = "AnnealedImportanceSampler.sample"
        num_chains = check_int(owner, "num_chains", num_chains, 1)
        power = check_float(owner, "power", power, 0.0, exclusive_minimum=True)
        run = self._run(owner, num_chains, power, generator, strict=True)
        assert not isinstance(run, str)
        return run

    def _run(
        self,
        owner: str,
        num_chains: int,
        power: float,
        generator: torch.Generator | None,
        *,
        strict: bool,
    ) -> AISResult | str:
        """The chains; without ``strict``, a description instead when the flow's samples fail."""
        config = self.config
        x, log_q = self._initial(num_chains, generator)
        for name, value in (("samples", x), ("log-densities", log_q)):
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                message = f"the flow's {name} held {int(bad.sum())} non-finite values"
                if not strict:
                    return message
                raise ValueError(f"{owner}: {message}; check its parameters")
        needs_gradient = config.transition != "metropolis"
        state = self._evaluate(owner, x, needs_gradient, strict=strict, log_q=log_q)
        flow_log_weights = state.log_p - state.log_q
        betas = self.betas.tolist()
        log_weights = self._increment(state, 0.0, betas[1], power)
        acceptance = torch.zeros_like(self.step_sizes)
        step_sizes = self.step_sizes.clone()
        for k in range(1, len(betas) - 1):
            for n in range(config.transitions_per_distribution):
                step = float(step_sizes[k - 1, n])
                state, accepted = self._transition(owner, state, betas[k], power, step, generator)
                acceptance[k - 1, n] = accepted
            log_weights = log_weights + self._increment(state, betas[k], betas[k + 1], power)
        if config.adapt_step_size:
            self.step_sizes = _adapted_step_sizes(step_sizes, acceptance, config)
        # A NaN weight (both log-densities -inf) is a chain of zero weight.
        log_weights = torch.nan_to_num(log_weights, nan=-math.inf).detach()
        if not strict and not bool(torch.isfinite(log_weights).any()):
            return f"every one of the {num_chains} AIS chains ended with zero weight"
        summary = _summarise(state.x.detach(), log_weights, owner)
        return AISResult(
            **{field.name: getattr(summary, field.name) for field in fields(ImportanceResult)},
            log_q=state.log_q.detach(),
            flow_log_weights=flow_log_weights.detach(),
            acceptance=acceptance,
            step_sizes=step_sizes,
        )

    def _initial(self, count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``count`` flow samples with their log-densities, no gradients."""
        device = next((p.device for p in self.flow.parameters()), torch.device("cpu"))
        devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=generator is not None):
            if generator is not None:
                seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
                torch.manual_seed(seed)
            return self.flow.sample_and_log_prob(count)

    def _evaluate(
        self,
        owner: str,
        x: Tensor,
        gradient: bool,
        *,
        strict: bool,
        log_q: Tensor | None = None,
    ) -> ChainState:
        """Both log-densities at ``x`` (and their gradients in ``x`` if ``gradient``)."""
        if not gradient:
            with torch.no_grad():
                if log_q is None:
                    log_q = self.flow.log_prob(x)
                log_p = call_target(owner, self.log_target, x, None, strict=strict)
            return ChainState(x, log_q, log_p, None, None)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            log_q_leaf = self.flow.log_prob(leaf)
            log_p = call_target(owner, self.log_target, leaf, None, strict=strict)
            if not log_p.requires_grad:
                raise ValueError(
                    f"{owner}: transition {self.config.transition!r} needs the gradient of "
                    "log_target, which returned values without one; use transition='metropolis'"
                )
            (grad_q,) = torch.autograd.grad(log_q_leaf.sum(), leaf)
            (grad_p,) = torch.autograd.grad(log_p.sum(), leaf)
        return ChainState(x.detach(), log_q_leaf.detach(), log_p.detach(), grad_q, grad_p)

    @staticmethod
    def _increment(state: ChainState, beta: float, next_beta: float, power: float) -> Tensor:
        return power * (next_beta - beta) * (state.log_p - state.log_q)

    def _transition(
        self,
        owner: str,
        state: ChainState,
        beta: float,
        power: float,
        step: float,
        generator: torch.Generator | None,
    ) -> tuple[ChainState, float]:
        """One Metropolis-Hastings transition leaving the intermediate distribution invariant."""
        config = self.config
        return transition(
            config.transition,
            state,
            Intermediate(beta, power, config.max_gradient),
            step,
            lambda x, gradient: self._evaluate(owner, x, gradient, strict=False),
            leapfrog_steps=config.leapfrog_steps,
            generator=generator,
        )


def _adapted_step_sizes(step_sizes: Tensor, acceptance: Tensor, config: AISConfig) -> Tensor:
    """The step sizes after a run with these mean acceptance probabilities (see AISConfig)."""
    target = config.target_acceptance
    if config.adaptation_rate is None:
        return torch.where(
            acceptance > target, step_sizes * ADAPTATION_FACTOR, step_sizes / ADAPTATION_FACTOR
        )
    change = (config.adaptation_rate * (acceptance - target)).clamp(
        -MAX_LOG_STEP_CHANGE, MAX_LOG_STEP_CHANGE
    )
    return step_sizes * change.exp()


def ais(
    flow: Flow,
    log_target: LogTarget,
    num_chains: int,
    config: AISConfig | None = None,
    *,
    generator: torch.Generator | None = None,
) -> AISResult:
    r"""Annealed importance sampling from the flow to the target: samples and unbiased weights.

    One run of a fresh :class:`AnnealedImportanceSampler` (its step sizes are not adapted within
    the run, so a run that should use adapted ones is made with the sampler itself, which keeps
    them between runs). :math:`\frac1N \sum_i w_i` is unbiased for :math:`Z`; ``log_z`` is its
    log, with the delta-method standard error. With more intermediate distributions the weights
    vary less, and the effective sample size rises.

    Args:
        flow: The proposal :math:`q`, an unconditional flow.
        log_target: Callable ``x -> log p~(x)``, shape ``(batch,)``.
        num_chains: Number of chains (>= 1).
        config: Schedule and transitions (None: :class:`AISConfig`'s defaults).
        generator: Source of every random draw; torch's global state is then left untouched.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1))
        >>> target = Gaussian([0.0], [1.0])
        >>> result = ais(flow, target, 100, AISConfig(num_intermediate=4))
        >>> bool(abs(result.log_z - target.log_z) < 1e-5)
        True
    """
    return AnnealedImportanceSampler(flow, log_target, config).sample(
        num_chains, generator=generator
    )
