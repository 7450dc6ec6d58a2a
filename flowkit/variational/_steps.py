"""One step of :func:`~flowkit.variational.fit`: the checked problem and its loss on a batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit._checks import check_bool, check_choice, check_int
from flowkit.distributions.flow import Flow
from flowkit.variational._checks import (
    LogTarget,
    call_target,
    check_context,
    check_flow_and_target,
    context_rows,
)
from flowkit.variational.annealing import AISConfig
from flowkit.variational.fab import ReplayBufferConfig, _FABSteps
from flowkit.variational.objectives import (
    OBJECTIVES,
    alpha_2_loss,
    forward_kl_loss,
    log_prob_detached,
    reverse_kl_loss,
)

__all__ = ["Problem", "StepValues", "check_problem", "evaluate"]


@dataclass
class Problem:
    """What every step needs: the flow, the target, the objective and its data."""

    flow: Flow
    log_target: LogTarget
    objective: str
    batch_size: int
    path_gradient: bool
    context: Tensor | None
    target_samples: Tensor | None
    fab: _FABSteps | None


@dataclass
class StepValues:
    """One step's values: the loss, the proposals' log-weights and a diagnosis if non-finite."""

    loss: Tensor
    log_weights: Tensor
    problem: str | None


def check_problem(
    owner: str,
    flow: object,
    log_target: object,
    steps: object,
    batch_size: object,
    objective: object,
    context: Tensor | None,
    target_samples: Tensor | None,
    path_gradient: object,
    ais: object,
    buffer: object,
) -> Problem:
    """The checked arguments of ``fit`` as one problem (its FAB sampler built if asked)."""
    checked = check_flow_and_target(owner, flow, log_target)
    check_int(owner, "steps", steps, 1)
    batch = check_int(owner, "batch_size", batch_size, 1)
    check_choice(owner, "objective", objective, OBJECTIVES)
    path = check_bool(owner, "path_gradient", path_gradient)
    if path and objective != "reverse_kl":
        raise ValueError(
            f"{owner}: path_gradient applies to objective 'reverse_kl' only, got objective "
            f"{objective!r}"
        )
    context = check_context(owner, checked, context, batched=True)
    if objective == "forward_kl":
        target_samples = _check_target_samples(owner, checked, target_samples, context)
    elif target_samples is not None:
        raise ValueError(
            f"{owner}: target_samples are used by objective 'forward_kl' only, got objective "
            f"{objective!r}"
        )
    fab = None
    if objective == "fab":
        if ais is not None and not isinstance(ais, AISConfig):
            raise TypeError(
                f"{owner} expects ais as an AISConfig or None, got {type(ais).__name__}"
            )
        if buffer is not None and not isinstance(buffer, ReplayBufferConfig):
            raise TypeError(
                f"{owner} expects buffer as a ReplayBufferConfig or None, got "
                f"{type(buffer).__name__}"
            )
        if checked.context_shape is not None:
            raise ValueError(f"{owner}: objective 'fab' fits unconditional flows only")
        fab = _FABSteps(checked, log_target, batch, ais, buffer)  # type: ignore[arg-type]
    elif ais is not None or buffer is not None:
        raise ValueError(
            f"{owner}: ais and buffer are settings of objective 'fab', got objective {objective!r}"
        )
    return Problem(
        flow=checked,
        log_target=log_target,  # type: ignore[arg-type]
        objective=str(objective),
        batch_size=batch,
        path_gradient=path,
        context=context,
        target_samples=target_samples,
        fab=fab,
    )


def _check_target_samples(
    owner: str, flow: Flow, samples: Tensor | None, context: Tensor | None
) -> Tensor:
    expected = tuple(flow.event_shape)
    if samples is None:
        raise ValueError(
            f"{owner}: objective 'forward_kl' needs target_samples of shape (n, "
            f"{', '.join(map(str, expected))}), got None"
        )
    if not isinstance(samples, Tensor) or not samples.is_floating_point():
        raise TypeError(
            f"{owner} expects target_samples as a floating-point torch.Tensor, got "
            f"{type(samples).__name__ if not isinstance(samples, Tensor) else samples.dtype}"
        )
    if samples.dim() != len(expected) + 1 or tuple(samples.shape[1:]) != expected:
        raise ValueError(
            f"{owner} expects target_samples of shape (n, {', '.join(map(str, expected))}), got "
            f"shape {tuple(samples.shape)}"
        )
    if samples.shape[0] == 0 or not bool(torch.isfinite(samples).all()):
        raise ValueError(f"{owner} expects at least one target sample, all finite")
    if context is not None and flow.context_shape is not None:
        if context.dim() > len(flow.context_shape) and context.shape[0] != samples.shape[0]:
            raise ValueError(
                f"{owner}: with target_samples, a batch of contexts pairs row by row with the "
                f"samples: expected {samples.shape[0]} contexts, got {context.shape[0]}"
            )
    return samples


def evaluate(problem: Problem, first: bool) -> StepValues:
    """The loss of one batch and the log-weights of flow samples; strict checks if ``first``."""
    flow, size = problem.flow, problem.batch_size
    owner = "fit"
    if problem.fab is not None:
        loss, log_weights, found = problem.fab.loss(first)
        if found is None and not bool(torch.isfinite(loss)):
            found = "the loss was not finite"
        return StepValues(loss, log_weights, found)
    if problem.objective == "forward_kl":
        samples = problem.target_samples
        assert samples is not None
        index = torch.randint(samples.shape[0], (size,), device=samples.device)
        rows = context_rows(flow, problem.context, size, index)
        loss = forward_kl_loss(flow.log_prob(samples[index], rows))
        with torch.no_grad():
            rows = context_rows(flow, problem.context, size)
            x, log_q = flow.sample_and_log_prob(size if rows is None else None, rows)
            log_p = _target(owner, problem, x, log_q, rows, first)
        problem_found = (
            None
            if bool(torch.isfinite(loss))
            else "the flow's log-density at target samples was not finite"
        )
        return StepValues(loss, (log_p - log_q).detach(), problem_found)
    rows = context_rows(flow, problem.context, size)
    x, log_q = flow.sample_and_log_prob(size if rows is None else None, rows)
    log_p = _target(owner, problem, x, log_q, rows, first)
    log_weights = (log_p - log_q).detach()
    # Zero target density is a zero weight for alpha = 2, but an infinite reverse KL.
    diagnosis = _diagnose(x, log_q, log_p, zero_density_allowed=problem.objective == "alpha_2")
    if diagnosis is not None:
        return StepValues(torch.tensor(math.nan), log_weights, diagnosis)
    if problem.objective == "alpha_2":
        loss = alpha_2_loss(log_p - log_q, flow.log_prob(x.detach(), rows))
    elif problem.path_gradient:
        loss = reverse_kl_loss(log_prob_detached(flow, x, rows), log_p)
    else:
        loss = reverse_kl_loss(log_q, log_p)
    return StepValues(
        loss, log_weights, None if bool(torch.isfinite(loss)) else "the loss was not finite"
    )


def _target(
    owner: str, problem: Problem, x: Tensor, log_q: Tensor, rows: Tensor | None, first: bool
) -> Tensor:
    if first:
        for name, value in (("samples", x), ("log-densities", log_q)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(
                    f"{owner}: the flow's first {name} are not finite; check its initialisation"
                )
    return call_target(owner, problem.log_target, x, rows, strict=first)


def _diagnose(x: Tensor, log_q: Tensor, log_p: Tensor, *, zero_density_allowed: bool) -> str | None:
    """What makes this batch's loss non-finite, or None when nothing does."""
    for name, value in (("the flow's samples", x), ("the flow's log-density", log_q)):
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            return f"{name} held {int(bad.sum())} non-finite values"
    nan = torch.isnan(log_p) | (log_p == math.inf)
    if bool(nan.any()):
        return f"log_target returned NaN or +inf for {int(nan.sum())} of {log_p.numel()} samples"
    zero = log_p == -math.inf
    if bool(zero.all()) if zero_density_allowed else bool(zero.any()):
        return (
            f"log_target returned -inf (zero density) for {int(zero.sum())} of {log_p.numel()} "
            "flow samples"
        )
    return None
