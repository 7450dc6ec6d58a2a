"""fit: train a flow towards a density known up to its normalising constant."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowkit._checks import check_bool, check_float, check_int
from flowkit.distributions.flow import Flow
from flowkit.errors import FlowkitError
from flowkit.variational._checks import LogTarget
from flowkit.variational._steps import Problem, StepValues, check_problem, evaluate
from flowkit.variational.annealing import AISConfig
from flowkit.variational.fab import ReplayBufferConfig
from flowkit.variational.objectives import effective_sample_size

__all__ = ["FitResult", "NonFiniteFitError", "fit"]

# The progress bar's loss and ESS are refreshed every this many steps (redrawing costs time).
PROGRESS_EVERY = 10


class NonFiniteFitError(FlowkitError, RuntimeError):
    """Fitting stopped: too many consecutive steps had a non-finite loss or gradient.

    The message names the last step and what was not finite (the flow's samples or
    log-densities, the target's values, the loss or a parameter's gradient); the flow keeps the
    parameters of its last finite step.
    """


@dataclass
class FitResult:
    """What :func:`fit` returns; one history entry per step, skipped steps included.

    Attributes:
        flow: The fitted flow (the one passed in, trained in place).
        objective: The objective's name.
        steps: Steps taken (optimizer updates plus skipped steps).
        losses: The loss at each step (NaN where the step was skipped).
        ess_fractions: Effective sample size of each step's flow samples as importance-sampling
            proposals for the target, as a fraction of the batch (1 when the flow equals the
            target).
        seconds: Wall time since the start, at the end of each step.
        skipped_steps: Steps skipped for a non-finite loss or gradient.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1))
        >>> result = fit(flow, Gaussian([2.0], [1.0]), steps=5, batch_size=8, progress=False)
        >>> result.steps, len(result.losses), len(result.ess_fractions), result.skipped_steps
        (5, 5, 5, 0)
    """

    flow: Flow
    objective: str
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    ess_fractions: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    skipped_steps: int = 0


def fit(
    flow: Flow,
    log_target: LogTarget,
    *,
    steps: int,
    batch_size: int,
    objective: str = "reverse_kl",
    lr: float = 1e-3,
    context: Tensor | None = None,
    target_samples: Tensor | None = None,
    grad_clip: float | None = None,
    path_gradient: bool = False,
    seed: int | None = None,
    progress: bool = True,
    max_nonfinite: int = 10,
    max_seconds: float | None = None,
    ais: AISConfig | None = None,
    buffer: ReplayBufferConfig | None = None,
) -> FitResult:
    r"""Fit a flow :math:`q` to a target known up to its normalising constant, with Adam.

    Objectives (``objective``):

    * ``"reverse_kl"``: :math:`E_q[\log q - \log \tilde p]` (:func:`reverse_kl_loss`) on
      reparameterised flow samples; mode-seeking. ``path_gradient=True`` uses the
      sticking-the-landing estimator (:func:`log_prob_detached`), whose variance vanishes as
      :math:`q \to p`; it costs one extra pass in the normalizing direction.
    * ``"alpha_2"``: :math:`\log E_q[w^2]` with :math:`w = \tilde p / q`
      (:func:`alpha_2_loss`), the α = 2 divergence, mass-covering; its gradient is
      :math:`-\sum_i \bar w_i \nabla \log q(x_i)` at the detached samples with self-normalised
      weights :math:`\bar w_i \propto w_i^2`, which costs one extra pass in the normalizing
      direction.
    * ``"forward_kl"``: :math:`-E_p[\log q]` on batches of ``target_samples``
      (:func:`forward_kl_loss`).
    * ``"fab"``: the flow annealed importance sampling bootstrap: the α = 2 divergence with its
      gradient estimated on annealed importance sampling (``ais``) from :math:`q` to
      :math:`\tilde p^2 / q`, each step on ``batch_size`` fresh chains
      (:func:`~flowkit.variational.fab_loss`), or, with ``buffer``, on batches drawn from FAB's
      prioritised replay buffer (:func:`~flowkit.variational.fab_replay_loss`; one AIS run per
      ``buffer.updates_per_ais`` steps). Mass-covering; it fits multimodal targets on which the
      reverse KL settles in a few modes. Unconditional flows only; each step costs the AIS
      chains' evaluations of the flow and the target (and their gradients).

    Each step's flow samples also give the effective sample size recorded in the history (for
    ``"forward_kl"`` a separate batch is drawn without gradients for it). A step whose loss or
    gradient norm is not finite is skipped, with a warning naming what was not finite;
    ``max_nonfinite`` such steps in a row stop the fit with :class:`NonFiniteFitError`, the flow
    keeping the parameters of its last finite step.

    Args:
        flow: The flow, trained in place.
        log_target: Callable ``x -> log p~(x)`` returning shape ``(batch,)``; for a conditional
            flow it is called as ``log_target(x, context)``. A
            :class:`~flowkit.variational.targets.Target` is one.
        steps: Number of optimizer steps (>= 1).
        batch_size: Samples per step (>= 1).
        objective: ``"reverse_kl"``, ``"alpha_2"``, ``"forward_kl"`` or ``"fab"``.
        lr: Adam's learning rate.
        context: For a conditional flow: one context (shape ``context_shape``) or a batch
            ``(n, *context_shape)`` from which each step draws its rows (amortised fitting;
            with ``target_samples``, row ``i`` is the context of sample ``i``).
        target_samples: Samples of the target, shape ``(n, *event_shape)``; needed by (and only
            by) ``"forward_kl"``.
        grad_clip: Clip the global gradient norm to this value (None: no clipping).
        path_gradient: Use the path-gradient estimator (``"reverse_kl"`` only).
        seed: Seed of the draws; torch's global random state is then left untouched. None draws
            from torch's global generator.
        progress: Show a progress bar with the loss and the ESS fraction.
        max_nonfinite: Consecutive non-finite steps that stop the fit.
        max_seconds: Stop after the step that passes this wall time (None: run every step), for
            comparisons at equal time; ``FitResult.steps`` then says how many ran.
        ais: For ``"fab"``: the AIS schedule and transitions (None: the defaults of
            :class:`~flowkit.variational.AISConfig`); the step sizes adapt over the fit.
        buffer: For ``"fab"``: the prioritised replay buffer's settings, or None to train on
            fresh AIS samples at every step. The ESS recorded at a step is that of the flow's
            samples which started the latest AIS run.

    Returns:
        A :class:`FitResult` with the history of loss and effective sample size.

    Raises:
        ValueError: At the first step, the target returns NaN, ``+inf`` or a wrong shape, or the
            flow's events do not match the target's ``dim``; an argument out of range.
        NonFiniteFitError: ``max_nonfinite`` consecutive non-finite steps.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1))
        >>> target = Gaussian([1.0, -1.0], [0.5, 2.0])
        >>> result = fit(flow, target, steps=300, batch_size=64, lr=0.05, seed=0, progress=False)
        >>> result.ess_fractions[-1] > 0.9
        True
    """
    owner = "fit"
    problem = check_problem(
        owner,
        flow,
        log_target,
        steps,
        batch_size,
        objective,
        context,
        target_samples,
        path_gradient,
        ais,
        buffer,
    )
    lr = check_float(owner, "lr", lr, 0.0, exclusive_minimum=True)
    grad_clip = check_float(
        owner, "grad_clip", grad_clip, 0.0, exclusive_minimum=True, optional=True
    )
    seed = check_int(owner, "seed", seed, optional=True)
    progress = check_bool(owner, "progress", progress)
    max_nonfinite = check_int(owner, "max_nonfinite", max_nonfinite, 1)
    max_seconds = check_float(
        owner, "max_seconds", max_seconds, 0.0, exclusive_minimum=True, optional=True
    )
    parameters = [parameter for parameter in flow.parameters() if parameter.requires_grad]
    if not parameters:
        raise ValueError(f"{owner}: the flow has no parameters that require gradients")
    optimizer = torch.optim.Adam(parameters, lr=lr)
    result = FitResult(flow=flow, objective=objective)
    devices = [p.device for p in parameters[:1] if p.device.type == "cuda"]
    bar = tqdm(total=steps, desc=f"fit ({objective})", disable=not progress)
    started = time.perf_counter()
    streak = 0
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), bar:
        if seed is not None:
            torch.manual_seed(seed)
        for step in range(steps):
            values = _backward(problem, optimizer, parameters, grad_clip, first=step == 0)
            # A non-finite step is never applied; too many in a row stop the fit.
            if values.problem is not None:
                streak += 1
                result.skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                _skip(step, values.problem, streak, max_nonfinite)
            else:
                streak = 0
                optimizer.step()
            _record(result, values, step, started)
            bar.update(1)
            out_of_time = max_seconds is not None and result.seconds[-1] >= max_seconds
            last = step == steps - 1 or out_of_time
            if step % PROGRESS_EVERY == 0 or last:
                loss, ess = result.losses[-1], result.ess_fractions[-1]
                bar.set_postfix(loss=f"{loss:.4g}", ess=f"{ess:.3f}", refresh=last)
            if out_of_time:
                break
    return result


def _backward(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    grad_clip: float | None,
    first: bool,
) -> StepValues:
    """One step's values and gradients (clipped); ``problem`` also names a non-finite gradient."""
    # Draw, evaluate the target (strictly checked at the first step) and form the loss.
    values = evaluate(problem, first=first)
    optimizer.zero_grad(set_to_none=True)
    if values.problem is None:
        values.loss.backward()
        limit = grad_clip if grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
        if not bool(torch.isfinite(grad_norm)):
            values.problem = _gradient_problem(problem.flow)
    return values


def _skip(step: int, problem: str, streak: int, max_nonfinite: int) -> None:
    """Warn of a skipped step (at fit's caller); stop once ``max_nonfinite`` came in a row."""
    warnings.warn(
        f"fit: step {step + 1}: {problem}; step skipped",
        RuntimeWarning,
        # The caller of fit, which calls this function.
        stacklevel=3,
    )
    if streak >= max_nonfinite:
        raise NonFiniteFitError(
            f"fit: {streak} consecutive steps had a non-finite loss or gradient (last, "
            f"step {step + 1}: {problem}); the flow keeps the parameters of its "
            "last finite step"
        )


def _record(result: FitResult, values: StepValues, step: int, started: float) -> None:
    """Add a step to the history: a skipped one keeps its place with a NaN loss."""
    loss = float(values.loss.detach()) if values.problem is None else math.nan
    ess = float(effective_sample_size(values.log_weights)) / values.log_weights.shape[0]
    result.steps = step + 1
    result.losses.append(loss)
    result.ess_fractions.append(ess)
    result.seconds.append(time.perf_counter() - started)


def _gradient_problem(flow: Flow) -> str:
    for name, parameter in flow.named_parameters():
        if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all()):
            return f"the gradient of parameter {name!r} was not finite"
    return "the gradient norm was not finite"
