"""Flow annealed importance sampling bootstrap (FAB): its losses and prioritised replay buffer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit._checks import check_float, check_int
from flowkit.distributions.flow import Flow
from flowkit.variational._checks import LogTarget
from flowkit.variational.annealing import AISConfig, AnnealedImportanceSampler

__all__ = [
    "PrioritisedReplayBuffer",
    "ReplayBufferConfig",
    "ReplaySample",
    "fab_loss",
    "fab_replay_loss",
]

# FAB's buffer, by default, in batches: it holds 100 and is sampled from once it holds 10.
CAPACITY_BATCHES = 100
MIN_LENGTH_BATCHES = 10
# The power a of AIS's final distribution p^a q^(1 - a): FAB's alpha = 2 divergence.
FAB_POWER = 2.0


def fab_loss(log_q: Tensor, log_weights: Tensor) -> Tensor:
    r"""FAB's loss on one batch of AIS samples: :math:`-\sum_i \bar w_i \log q_\theta(x_i)`.

    :math:`x_i` are the final states of AIS chains from :math:`q` to :math:`\tilde p^2 / q`, and
    :math:`\bar w_i` their self-normalised AIS weights (:math:`\bar w_i \propto w_i`). Its
    gradient estimates the gradient of the α = 2 divergence
    :math:`-E_q[w^2 \nabla \log q_\theta] / E_q[w^2] \propto
    -\int \frac{p^2}{q} \nabla \log q_\theta`, with AIS in place of the flow's own samples.

    Args:
        log_q: :math:`\log q_\theta(x_i)` at the AIS samples (differentiable in the
            parameters), shape ``(N,)``.
        log_weights: The AIS log-weights, shape ``(N,)``; not differentiated.

    References:
        Midgley et al., Flow Annealed Importance Sampling Bootstrap (ICLR 2023), eq. 8.

    Example:
        >>> fab_loss(torch.tensor([-1.0, -3.0]), torch.tensor([0.0, 0.0]))
        tensor(2.)
    """
    if log_q.shape != log_weights.shape or log_q.dim() != 1:
        raise ValueError(
            f"fab_loss expects log_q and log_weights of one shape (N,), got "
            f"{tuple(log_q.shape)} and {tuple(log_weights.shape)}"
        )
    return -(torch.softmax(log_weights.detach(), dim=0) * log_q).sum()


def fab_replay_loss(
    log_q: Tensor, log_q_at_sampling: Tensor, max_adjustment: float | None = None
) -> Tensor:
    r"""FAB's loss on a batch drawn from its prioritised buffer (Algorithm 2 of the paper).

    The batch was drawn with probability proportional to the stored AIS weights, which were
    computed for :math:`\tilde p^2 / q_{old}`; for the current flow the weight of :math:`x_i` is
    :math:`w_i \, q_{old}(x_i) / q_\theta(x_i)`, so the loss is
    :math:`-\frac1N \sum_i \frac{q_{old}(x_i)}{q_\theta(x_i)} \log q_\theta(x_i)`, the ratio held
    constant.

    Args:
        log_q: :math:`\log q_\theta(x_i)`, differentiable, shape ``(N,)``.
        log_q_at_sampling: :math:`\log q_{old}(x_i)` stored with the samples, shape ``(N,)``.
        max_adjustment: Clip the ratio :math:`q_{old} / q_\theta` at this value (None: no clip).

    Example:
        >>> fab_replay_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0]))
        tensor(1.5000)
    """
    if log_q.shape != log_q_at_sampling.shape or log_q.dim() != 1:
        raise ValueError(
            f"fab_replay_loss expects log_q and log_q_at_sampling of one shape (N,), got "
            f"{tuple(log_q.shape)} and {tuple(log_q_at_sampling.shape)}"
        )
    ratio = torch.exp(log_q_at_sampling - log_q.detach())
    if max_adjustment is not None:
        ratio = ratio.clamp(max=max_adjustment)
    return -(ratio * log_q).mean()


@dataclass(frozen=True)
class ReplayBufferConfig:
    r"""Settings of FAB's prioritised replay buffer in :func:`~flowkit.variational.fit`.

    Each AIS run of ``batch_size`` chains is added to the buffer; then ``updates_per_ais``
    batches are drawn from it at once (without replacement, in proportion to their weights) and
    each gives one optimizer step.

    Args:
        capacity: Samples held; the oldest are overwritten (None: 100 batches).
        min_length: Samples the buffer holds, from AIS runs with the initial flow, before the
            first step (None: 10 batches, and at least ``updates_per_ais`` batches).
        updates_per_ais: Optimizer steps per AIS run (FAB's ``n_batches_buffer_sampling``).
        max_adjustment: Clip of the weight adjustment :math:`q_{old} / q_\theta` in the loss
            (None: no clip, FAB's default).

    Example:
        >>> ReplayBufferConfig().lengths(128)
        (12800, 1280)
    """

    capacity: int | None = None
    min_length: int | None = None
    updates_per_ais: int = 4
    max_adjustment: float | None = None

    def __post_init__(self) -> None:
        owner = "ReplayBufferConfig"
        check_int(owner, "capacity", self.capacity, 1, optional=True)
        check_int(owner, "min_length", self.min_length, 1, optional=True)
        check_int(owner, "updates_per_ais", self.updates_per_ais, 1)
        check_float(
            owner,
            "max_adjustment",
            self.max_adjustment,
            0.0,
            exclusive_minimum=True,
            optional=True,
        )

    def lengths(self, batch_size: int) -> tuple[int, int]:
        """``(capacity, min_length)`` for batches of ``batch_size``, checked against each other."""
        owner = "ReplayBufferConfig"
        drawn = self.updates_per_ais * batch_size
        capacity = CAPACITY_BATCHES * batch_size if self.capacity is None else self.capacity
        minimum = (
            max(MIN_LENGTH_BATCHES * batch_size, drawn)
            if self.min_length is None
            else self.min_length
        )
        if minimum < drawn:
            raise ValueError(
                f"{owner}: min_length must hold the {self.updates_per_ais} batches of "
                f"{batch_size} drawn per AIS run ({drawn} samples), got {minimum}"
            )
        if capacity <= minimum:
            raise ValueError(
                f"{owner} expects capacity above min_length ({minimum}), got {capacity}"
            )
        return capacity, minimum


@dataclass(frozen=True)
class ReplaySample:
    """A batch drawn from a :class:`PrioritisedReplayBuffer`.

    Attributes:
        x: The samples, shape ``(n, *event_shape)``.
        log_weights: Their stored log-weights, shape ``(n,)``.
        log_q: The flow's log-density stored with them, shape ``(n,)``.
        indices: Their places in the buffer, shape ``(n,)``, for
            :meth:`PrioritisedReplayBuffer.adjust`.
    """

    x: Tensor
    log_weights: Tensor
    log_q: Tensor
    indices: Tensor


class PrioritisedReplayBuffer:
    r"""FAB's prioritised replay buffer of AIS samples, their log-weights and the flow's log q.

    A ring of ``capacity`` entries ``(x, log w, log q_old)``: :meth:`add` overwrites the oldest,
    :meth:`sample` draws without replacement with probability proportional to :math:`w` (the
    Gumbel top-k trick), and :meth:`adjust` brings drawn entries to the current flow,
    :math:`w \leftarrow w \, q_{old}(x) / q_{new}(x)` and :math:`q_{old} \leftarrow q_{new}`,
    since their weights were computed for the AIS target :math:`\tilde p^2 / q_{old}`.

    Args:
        event_shape: Shape of one sample.
        capacity: Entries held (>= 1).
        min_length: Entries needed before :meth:`sample` may be called.
        dtype: Floating dtype of the stored values.
        device: Where they are stored.

    References:
        Midgley et al., Flow Annealed Importance Sampling Bootstrap (ICLR 2023), Algorithm 2.

    Example:
        >>> buffer = PrioritisedReplayBuffer((2,), capacity=8, min_length=4)
        >>> buffer.add(torch.zeros(4, 2), torch.tensor([0.0, 0.0, -1e9, 0.0]), torch.zeros(4))
        >>> drawn = buffer.sample(3, generator=torch.Generator().manual_seed(0))
        >>> sorted(drawn.indices.tolist())
        [0, 1, 3]
    """

    def __init__(
        self,
        event_shape: tuple[int, ...],
        capacity: int,
        min_length: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        owner = "PrioritisedReplayBuffer"
        self.capacity = check_int(owner, "capacity", capacity, 1)
        self.min_length = check_int(owner, "min_length", min_length, 1, self.capacity)
        self.event_shape = tuple(event_shape)
        self.x = torch.zeros((self.capacity, *self.event_shape), dtype=dtype, device=device)
        self.log_weights = torch.full((self.capacity,), -math.inf, dtype=dtype, device=device)
        self.log_q = torch.zeros(self.capacity, dtype=dtype, device=device)
        self.next_index = 0
        self.length = 0

    def __len__(self) -> int:
        """Entries held."""
        return self.length

    @property
    def can_sample(self) -> bool:
        """Whether the buffer holds ``min_length`` entries."""
        return self.length >= self.min_length

    @torch.no_grad()
    def add(self, x: Tensor, log_weights: Tensor, log_q: Tensor) -> None:
        """Store a batch, overwriting the oldest entries once full; NaN weights become zero."""
        count = x.shape[0]
        if (
            tuple(x.shape[1:]) != self.event_shape
            or log_weights.shape != (count,)
            or (log_q.shape != (count,))
        ):
            raise ValueError(
                f"PrioritisedReplayBuffer.add expects x of shape (n, *{self.event_shape}) with "
                f"log_weights and log_q of shape (n,), got {tuple(x.shape)}, "
                f"{tuple(log_weights.shape)} and {tuple(log_q.shape)}"
            )
        index = (torch.arange(count, device=self.x.device) + self.next_index) % self.capacity
        self.x[index] = x.to(self.x)
        self.log_weights[index] = torch.nan_to_num(log_weights.to(self.x), nan=-math.inf)
        self.log_q[index] = log_q.to(self.x)
        self.next_index = (self.next_index + count) % self.capacity
        self.length = min(self.capacity, self.length + count)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> ReplaySample:
        """Draw ``n`` distinct entries, each with probability proportional to its weight.

        Raises:
            ValueError: The buffer holds fewer than ``min_length`` entries, or fewer than ``n``
                of non-zero weight.
        """
        owner = "PrioritisedReplayBuffer.sample"
        n = check_int(owner, "n", n, 1)
        if not self.can_sample:
            raise ValueError(
                f"{owner}: the buffer holds {self.length} entries, fewer than its min_length "
                f"{self.min_length}"
            )
        logits = self.log_weights[: self.length]
        usable = int(torch.isfinite(logits).sum())
        if usable < n:
            raise ValueError(
                f"{owner}: {n} entries requested, but only {usable} of {self.length} have a "
                "non-zero weight"
            )
        # Gumbel top-k: the n largest of log w + Gumbel noise are a draw without replacement.
        device = logits.device if generator is None else generator.device
        uniform = torch.rand(logits.shape, generator=generator, device=device, dtype=logits.dtype)
        gumbel = -torch.log(-torch.log(uniform.to(logits.device).clamp_min(1e-30)))
        indices = torch.topk(logits + gumbel, n, sorted=False).indices
        order = torch.randperm(n, generator=generator, device=device).to(indices.device)
        indices = indices[order]
        return ReplaySample(
            self.x[indices], self.log_weights[indices], self.log_q[indices], indices
        )

    @torch.no_grad()
    def adjust(self, indices: Tensor, log_q: Tensor) -> None:
        r"""Reweight drawn entries for the current flow: :math:`w \leftarrow w\, q_{old} / q`.

        An entry whose new :math:`\log q` is not finite gets zero weight.
        """
        log_q = log_q.to(self.log_q)
        valid = torch.isfinite(log_q)
        adjustment = torch.where(valid, self.log_q[indices] - log_q, -math.inf)
        self.log_weights[indices] = self.log_weights[indices] + adjustment
        self.log_q[indices] = torch.where(valid, log_q, self.log_q[indices])


class _FABSteps:
    """The losses of fit(objective="fab"): AIS runs, the buffer and its queue of batches."""

    def __init__(
        self,
        flow: Flow,
        log_target: LogTarget,
        batch_size: int,
        ais: AISConfig | None,
        buffer: ReplayBufferConfig | None,
    ) -> None:
        self.flow = flow
        self.batch_size = batch_size
        self.sampler = AnnealedImportanceSampler(flow, log_target, ais)
        self.config = buffer
        self.buffer: PrioritisedReplayBuffer | None = None
        if buffer is not None:
            capacity, minimum = buffer.lengths(batch_size)
            parameter = next(iter(flow.parameters()))
            self.buffer = PrioritisedReplayBuffer(
                tuple(flow.event_shape),
                capacity,
                minimum,
                dtype=parameter.dtype,
                device=parameter.device,
            )
        self.queue: list[ReplaySample] = []
        self.flow_log_weights = torch.full((batch_size,), math.nan)

    def loss(self, first: bool) -> tuple[Tensor, Tensor, str | None]:
        """The step's loss, the flow's latest log-weights (for the ESS) and a problem, if any."""
        if self.buffer is None:
            run = self.sampler._run("fit", self.batch_size, FAB_POWER, None, strict=first)
            if isinstance(run, str):
                return torch.tensor(math.nan), self.flow_log_weights, run
            self.flow_log_weights = run.flow_log_weights
            return (
                fab_loss(self.flow.log_prob(run.samples), run.log_weights),
                run.flow_log_weights,
                None,
            )
        if not self.queue:
            problem = self._refill(first)
            if problem is not None:
                return torch.tensor(math.nan), self.flow_log_weights, problem
        batch = self.queue.pop(0)
        log_q = self.flow.log_prob(batch.x)
        assert self.config is not None
        loss = fab_replay_loss(log_q, batch.log_q, self.config.max_adjustment)
        self.buffer.adjust(batch.indices, log_q.detach())
        return loss, self.flow_log_weights, None

    def _refill(self, first: bool) -> str | None:
        """Run AIS into the buffer (until it may be sampled), then draw the next batches."""
        assert self.buffer is not None and self.config is not None
        while True:
            run = self.sampler._run("fit", self.batch_size, FAB_POWER, None, strict=first)
            if isinstance(run, str):
                return run
            self.flow_log_weights = run.flow_log_weights
            self.buffer.add(run.samples, run.log_weights, run.log_q)
            if self.buffer.can_sample:
                break
        drawn = self.buffer.sample(self.config.updates_per_ais * self.batch_size)
        self.queue = [
            ReplaySample(*parts)
            for parts in zip(
                *(
                    torch.split(value, self.batch_size)
                    for value in (drawn.x, drawn.log_weights, drawn.log_q, drawn.indices)
                ),
                strict=True,
            )
        ]
        return None
