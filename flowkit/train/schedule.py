"""The optimizer and its learning rate: a pure function of the step, set on every step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from flowkit._checks import check_choice, check_float, check_int
from flowkit.train.config import LR_DECAYS, TrainConfig

__all__ = ["LearningRateSchedule", "build_optimizer", "horizon", "polyak_decay"]


@dataclass(frozen=True)
class LearningRateSchedule:
    r"""The learning rate of each optimizer step: linear warm-up, then a decay to a floor.

    Steps are counted from 1 (the first update is step 1). With peak rate :math:`\eta`, warm-up
    length :math:`W` (at least one step), last step :math:`T` and floor ratio :math:`r`, step
    :math:`s` uses

    .. math::
        \eta_s = \eta \min(1, s / W) \quad (s \le W), \qquad
        \eta_s = \eta \, (r + (1 - r)\, d(p)), \quad p = \min\left(1, \frac{s - W}{T - W}\right)
        \quad (s > W),

    where :math:`d(p)` is 1 (``"constant"``), :math:`(1 + \cos \pi p) / 2` (``"cosine"``) or
    :math:`1 - p` (``"linear"``). The warm-up rises linearly from 0, reaching the peak at step
    :math:`W`; a decay reaches the floor :math:`r \eta` at step :math:`T`. Nothing but the step
    enters, so a resumed run needs no schedule state, and a new peak rate takes effect at the
    step it resumes from.

    Attributes:
        lr: The peak (base) learning rate :math:`\eta`.
        warmup_steps: :math:`W`, possibly fractional (``warmup_epochs`` times the steps per
            epoch); lengths under one step mean no warm-up.
        total_steps: :math:`T`, the run's last step.
        decay: ``"constant"``, ``"cosine"`` or ``"linear"``.
        min_lr_ratio: The floor :math:`r` as a fraction of the peak (ignored by ``"constant"``).

    Example:
        >>> schedule = LearningRateSchedule(1e-3, warmup_steps=4, total_steps=12, decay="cosine")
        >>> [round(schedule(s) / 1e-3, 3) for s in (1, 2, 4, 8, 12)]
        [0.25, 0.5, 1.0, 0.5, 0.0]
    """

    lr: float
    warmup_steps: float = 0.0
    total_steps: int = 1
    decay: str = "constant"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        owner = "LearningRateSchedule"
        check_float(owner, "lr", self.lr, 0.0, exclusive_minimum=True)
        check_float(owner, "warmup_steps", self.warmup_steps, 0.0)
        check_int(owner, "total_steps", self.total_steps, 1)
        check_choice(owner, "decay", self.decay, LR_DECAYS)
        check_float(owner, "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> LearningRateSchedule:
        """The schedule a run with ``config`` and ``steps_per_epoch`` steps an epoch follows."""
        # TrainConfig allows one of the two to be non-zero.
        warmup = config.warmup_steps or (config.warmup_epochs or 0.0) * steps_per_epoch
        return cls(
            config.lr,
            warmup_steps=warmup,
            total_steps=horizon(config, steps_per_epoch),
            decay=config.lr_decay,
            min_lr_ratio=config.min_lr_ratio,
        )

    def __call__(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (counted from 1)."""
        check_int("LearningRateSchedule", "step", step, 1)
        # Warm-up lengths under one step would give a first rate above the peak.
        warmup = max(1.0, self.warmup_steps)
        if step <= warmup or self.decay == "constant":
            return self.lr * min(1.0, step / warmup)
        span = self.total_steps - warmup
        progress = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
        if self.decay == "cosine":
            remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            remaining = 1.0 - progress
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * remaining)


def horizon(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run's last step, where a decay ends: ``max_steps`` or ``epochs`` epochs, the sooner.

    A time budget (``max_minutes``) is not known in steps in advance and does not enter.
    """
    total = config.epochs * steps_per_epoch
    return total if config.max_steps is None else min(total, config.max_steps)


def polyak_decay(config: TrainConfig, steps_per_epoch: int) -> float:
    """``1 - 1 / (steps_per_epoch * polyak_epochs)``: Glow's official ``beta2`` and EMA decay."""
    return 1.0 - 1.0 / max(2.0, steps_per_epoch * config.polyak_epochs)


def build_optimizer(
    parameters: Iterable[nn.Parameter], config: TrainConfig, steps_per_epoch: int
) -> Optimizer:
    """The optimizer ``config`` names, with its betas and (for AdamW) decoupled weight decay.

    ``beta2`` None takes :func:`polyak_decay`. Adamax and Adam get no weight decay (torch's
    would be an L2 penalty in the gradient; :class:`TrainConfig` refuses it); AdamW shrinks
    every weight by ``lr * weight_decay`` per step, apart from the gradient.
    """
    beta2 = config.beta2 if config.beta2 is not None else polyak_decay(config, steps_per_epoch)
    betas = (config.beta1, beta2)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            parameters, lr=config.lr, betas=betas, weight_decay=config.weight_decay
        )
    optimizer_class = torch.optim.Adamax if config.optimizer == "adamax" else torch.optim.Adam
    return optimizer_class(parameters, lr=config.lr, betas=betas)
