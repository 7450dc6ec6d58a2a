"""TrainState: everything a run needs to continue exactly, written to and read from checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.swa_utils import AveragedModel

from flowkit.distributions import Dequantized, Flow

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """The model, the optimizer, the averaged weights, random states and counters.

    ``state_dict()``/``load_state_dict()`` hold exactly what makes a resumed run continue bit for
    bit on the same machine: the weights, the optimizer's moments, the weight average, the
    dequantisation-noise generator and torch's global generator, the step and the position in the
    epoch, the losses of the current logging window and the wall-clock time spent so far. The
    learning rate is a function of the step (:mod:`flowkit.train.schedule`), so it needs no state
    of its own.

    Attributes:
        flow: The model being trained (raw weights).
        optimizer: Its optimizer.
        ema: The Polyak average of the weights, or None.
        noise: Generator of the dequantisation noise of training batches.
        step: Optimizer steps attempted (skipped non-finite steps included).
        epoch: Whole epochs completed.
        batch_in_epoch: Batches of the current epoch already done.
        elapsed: Wall-clock seconds of training so far, over every session of the run.
        window: Losses since the last logged training record (their mean is logged next).
        nonfinite_streak: Consecutive steps whose loss or gradient was not finite.
        last_saved_step: The step of the last checkpoint written (None before the first).
        metrics_records: Records in metrics.jsonl when the state was saved (None: unknown).
        best: The evaluation with the best validation value so far: its ``step``, ``epoch``,
            ``validation`` and ``test`` values and the evaluated weights (``model``, a state
            dict); None without a validation set or before the first evaluation.
        stopped: Whether early stopping ended the run.
    """

    flow: Flow | Dequantized
    optimizer: Optimizer
    ema: AveragedModel | None
    noise: torch.Generator
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    window: list[float] = field(default_factory=list)
    nonfinite_streak: int = 0
    last_saved_step: int | None = None
    metrics_records: int | None = None
    best: dict[str, Any] | None = None
    stopped: bool = False

    @property
    def averaged_flow(self) -> Flow | Dequantized:
        """The flow with the averaged weights (the raw one when no average is kept)."""
        if self.ema is None:
            return self.flow
        averaged = self.ema.module
        assert isinstance(averaged, (Flow, Dequantized)), "AveragedModel copies the model it had"
        return averaged

    def state_dict(self) -> dict[str, Any]:
        """The resumable state, as plain containers of tensors and numbers."""
        return {
            "model": self.flow.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed": self.elapsed,
            "window": list(self.window),
            "metrics_records": self.metrics_records,
            "best": self.best,
            "stopped": self.stopped,
            "noise_rng": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (format 1 checkpoints lack the newer entries).

        The learning-rate scheduler state of older checkpoints (``"scheduler"``) is ignored: the
        rate follows from the step.
        """
        self.flow.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.noise.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.window = [float(value) for value in state.get("window", [])]
        self.last_saved_step = self.step
        self.metrics_records = state.get("metrics_records")
        self.best = state.get("best")
        self.stopped = bool(state.get("stopped", False))
