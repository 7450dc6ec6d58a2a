"""Importance sampling with a flow as proposal: log Z, its standard error, ESS, expectations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit._checks import check_int
from flowkit.distributions.flow import Flow
from flowkit.variational._checks import (
    LogTarget,
    call_target,
    check_context,
    check_flow_and_target,
    context_rows,
)
from flowkit.variational.objectives import effective_sample_size

__all__ = ["ImportanceResult", "expectation", "importance"]

# Samples drawn per pass through the flow when the caller does not say.
DEFAULT_BATCH_SIZE = 4096


@dataclass(frozen=True)
class ImportanceResult:
    r"""What :func:`importance` returns.

    Attributes:
        samples: The proposals :math:`x_i \sim q`, shape ``(N, *event_shape)``.
        log_weights: :math:`\log w_i = \log \tilde p(x_i) - \log q(x_i)`, shape ``(N,)``.
        weights: Self-normalised weights :math:`\bar w_i = w_i / \sum_j w_j`, shape ``(N,)``.
        log_z: :math:`\log \hat Z = \log \frac1N \sum_i w_i`.
        log_z_std_error: Standard error of ``log_z`` by the delta method,
            :math:`\mathrm{sd}(w) / (\sqrt N\, \bar w)`.
        ess: Effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2`.
        ess_fraction: ``ess / N``, in :math:`(0, 1]`; 1 when :math:`q = p`.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((1,)), Affine(shape=(1,), scale=0.5, event_rank=1))
        >>> result = importance(flow, Gaussian([0.0], [1.0]), 100, seed=0)
        >>> result.samples.shape, result.weights.shape, 0 < result.ess_fraction < 1
        (torch.Size([100, 1]), torch.Size([100]), True)
    """

    samples: Tensor
    log_weights: Tensor
    weights: Tensor
    log_z: float
    log_z_std_error: float
    ess: float
    ess_fraction: float


@torch.no_grad()
def importance(
    flow: Flow,
    log_target: LogTarget,
    num_samples: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    context: Tensor | None = None,
    seed: int | None = None,
) -> ImportanceResult:
    r"""Importance sampling of an unnormalised target with the flow as proposal.

    Draws :math:`x_i \sim q` with their log-density in one pass (``flow.sample_and_log_prob``),
    evaluates :math:`\log \tilde p(x_i)` and returns the weights with the estimate
    :math:`\hat Z = \frac1N \sum_i w_i` of the normalising constant (unbiased for :math:`Z`; its
    log is computed as a log-sum-exp), the delta-method standard error of :math:`\log \hat Z`
    and Kish's effective sample size.

    Args:
        flow: The proposal :math:`q`, a :class:`~flowkit.distributions.Flow`.
        log_target: Callable ``x -> log p~(x)`` of shape ``(batch,)`` (``(x, context)`` for a
            conditional flow), e.g. a :class:`~flowkit.variational.targets.Target`.
        num_samples: Number of samples ``N`` (>= 1).
        batch_size: Samples per pass through the flow and the target.
        context: For a conditional flow, the one context (shape ``context_shape``) at which the
            target is evaluated; None for an unconditional flow.
        seed: Seed of the draws, which then leave torch's global random state untouched; None
            draws from torch's global generator.

    Raises:
        ValueError: The target returns the wrong shape, NaN or ``+inf``; the flow's samples or
            log-densities are not finite; the flow's events do not match the target's ``dim``.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1))
        >>> target = Gaussian([0.0, 0.0], [1.0, 1.0])
        >>> result = importance(flow, target, 1000, seed=0)
        >>> round(result.ess_fraction, 6), abs(result.log_z - target.log_z) < 1e-5
        (1.0, True)
    """
    owner = "importance"
    flow = check_flow_and_target(owner, flow, log_target)
    num_samples = check_int(owner, "num_samples", num_samples, 1)
    batch_size = check_int(owner, "batch_size", batch_size, 1)
    seed = check_int(owner, "seed", seed, optional=True)
    context = check_context(owner, flow, context, batched=False)
    devices = [flow_device] if (flow_device := _cuda_device(flow)) is not None else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        samples, log_weights = [], []
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            rows = context_rows(flow, context, count)
            x, log_q = flow.sample_and_log_prob(count if rows is None else None, rows)
            _check_proposal(owner, x, log_q)
            log_p = call_target(owner, log_target, x, rows, strict=True)
            samples.append(x)
            log_weights.append(log_p - log_q)
    all_log_weights = torch.cat(log_weights)
    return _summarise(torch.cat(samples), all_log_weights)


def expectation(f: Callable[[Tensor], Tensor], result: ImportanceResult) -> Tensor:
    r"""Self-normalised importance-sampling estimate of :math:`E_p[f(x)]`.

    :math:`\sum_i \bar w_i f(x_i)` with the weights of an :func:`importance` result. Consistent,
    with a bias of order :math:`1/N`.

    Args:
        f: Function of the samples ``(N, *event_shape)`` returning ``(N,)`` or ``(N, *shape)``.
        result: The importance-sampling result.

    Returns:
        The estimate, of shape ``()`` or ``shape``.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> from flowkit.variational.targets import Gaussian
        >>> flow = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1))
        >>> result = importance(flow, Gaussian([0.5], [1.0]), 20000, seed=0)
        >>> bool(abs(expectation(lambda x: x[:, 0], result) - 0.5) < 0.05)
        True
    """
    if not isinstance(result, ImportanceResult):
        raise TypeError(
            f"expectation expects an ImportanceResult (from importance), got "
            f"{type(result).__name__}"
        )
    values = f(result.samples)
    count = result.weights.shape[0]
    if not isinstance(values, Tensor) or values.dim() < 1 or values.shape[0] != count:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"expectation: f must return a tensor with one row per sample, shape ({count}, ...), "
            f"got {got}"
        )
    weights = result.weights.to(values.dtype).reshape((count,) + (1,) * (values.dim() - 1))
    return (weights * values).sum(0)


def _summarise(samples: Tensor, log_weights: Tensor, owner: str = "importance") -> ImportanceResult:
    count = log_weights.shape[0]
    if not bool(torch.isfinite(log_weights).any()):
        raise ValueError(
            f"{owner}: every one of the {count} samples has zero target density "
            "(log_target is -inf everywhere the flow puts its samples)"
        )
    # Weights relative to the largest, so that exp cannot overflow; in float64 for the sums.
    shift = log_weights.max()
    relative = torch.exp((log_weights - shift).double())
    mean = relative.mean()
    log_z = float(shift) + math.log(float(mean))
    spread = float(relative.std()) if count > 1 else math.inf
    ess = float(effective_sample_size(log_weights.double()))
    return ImportanceResult(
        samples=samples,
        log_weights=log_weights,
        weights=(relative / relative.sum()).to(log_weights.dtype),
        log_z=log_z,
        log_z_std_error=spread / (math.sqrt(count) * float(mean)),
        ess=ess,
        ess_fraction=ess / count,
    )


def _check_proposal(owner: str, x: Tensor, log_q: Tensor) -> None:
    for name, value in (("samples", x), ("log-densities", log_q)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{owner}: the flow produced non-finite {name} "
                f"({int((~torch.isfinite(value)).sum())} of {value.numel()} values); its "
                "parameters may have diverged"
            )


def _cuda_device(flow: Flow) -> torch.device | None:
    for tensor in flow.parameters():
        return tensor.device if tensor.device.type == "cuda" else None
    return None
