"""The Trainer: from images or vectors to a trained flow, its metrics, samples and checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from flowkit.data.tables import split_indices
from flowkit.distributions import Dequantized, Flow
from flowkit.errors import FlowkitError
from flowkit.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    versions,
)
from flowkit.train.config import RESUMABLE_SETTINGS, ConfigError, TrainConfig
from flowkit.train.data import (
    ImageTrainingData,
    TrainingData,
    VectorTrainingData,
    as_training_data,
    image_model,
)
from flowkit.train.diagnostics import first_nonfinite_gradient, locate_nonfinite
from flowkit.train.distributed import Process, all_reduce_sum, setup
from flowkit.train.metrics import MetricsWriter, read_metrics
from flowkit.train.objectives import BitsPerDim, NatsPerExample, Objective
from flowkit.train.plots import plot_curve, plot_density_2d
from flowkit.train.progress import Progress
from flowkit.train.rundir import RunDirectory
from flowkit.train.samples import write_sample_grid
from flowkit.train.schedule import LearningRateSchedule, build_optimizer, horizon, polyak_decay
from flowkit.train.state import TrainState
from flowkit.train.step import MixedPrecision, accumulate_gradients

__all__ = [
    "NonFiniteError",
    "ResumeMismatchError",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
]

# The learning curve is redrawn at most this often (seconds), and at the end of the run.
PLOT_INTERVAL = 60.0


class NonFiniteError(FlowkitError, RuntimeError):
    """Training stopped because the model diverged (non-finite losses, gradients or weights)."""


class TrainingInterrupted(FlowkitError):
    """Training was interrupted (Ctrl-C); a checkpoint of the current step was written first."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class ResumeMismatchError(FlowkitError, ValueError):
    """``resume`` was asked with settings that a resumed run cannot change."""


@dataclass
class TrainResult:
    """What a finished :meth:`Trainer.fit` reports.

    Attributes:
        steps: Optimizer steps attempted in the whole run (skipped non-finite steps included).
        epochs_completed: Whole epochs done.
        test_history: ``(step, value)`` per evaluation, in ``unit``; evaluated with the
            averaged weights when ``config.ema`` is on.
        train_losses: Loss of every applied step of this call (resumed runs: from the resume on).
        output: The output directory.
        unit: ``"bits/dim"`` for images, ``"nats"`` (per example) for vectors.
        validation_history: ``(step, value)`` per evaluation on the validation set, in
            :attr:`unit` (empty without one).
        best: The evaluation with the best validation value: ``step``, ``epoch``, ``validation``
            and ``test`` (None without a validation set). Its weights are the checkpoint's
            ``best`` weights, which :func:`flowkit.load` returns by default.
        stopped_early: Whether ``patience`` epochs without a better validation value ended the
            run.
        flow: The trained model in the data's units (:func:`flowkit.fit` sets it: a table's flow
            wrapped in its standardisation); None from :meth:`Trainer.fit`.
    """

    steps: int
    epochs_completed: int
    test_history: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    output: Path | None = None
    unit: str = "bits/dim"
    validation_history: list[tuple[int, float]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped_early: bool = False
    flow: Flow | Dequantized | None = None

    @property
    def test_bpd(self) -> list[tuple[int, float]]:
        """Test bits/dim per evaluation (image runs)."""
        if self.unit != "bits/dim":
            raise AttributeError("this run measured nats per example; read test_nll instead")
        return self.test_history

    @property
    def test_nll(self) -> list[tuple[int, float]]:
        """Test negative log-likelihood in nats per example per evaluation (vector runs)."""
        if self.unit != "nats":
            raise AttributeError("this run measured bits per dimension; read test_bpd instead")
        return self.test_history

    @property
    def final_test_bpd(self) -> float | None:
        """The last evaluated test bits/dim (image runs)."""
        return self.test_bpd[-1][1] if self.test_bpd else None

    @property
    def final_test_nll(self) -> float | None:
        """The last evaluated test negative log-likelihood in nats (vector runs)."""
        return self.test_nll[-1][1] if self.test_nll else None


class Trainer:
    """Trains any :class:`~flowkit.Flow` by maximum likelihood.

    For images (uint8 :class:`~flowkit.data.ImageData`) the objective is bits per dimension with
    uniform dequantisation; for float vectors (tensors, numpy arrays, a ``(values, context)``
    pair, or a ``torch.utils.data.Dataset``/``DataLoader`` of either) it is the negative
    log-likelihood in nats per example. Every run writes to ``config.output``: ``config.json`` (the
    effective settings), ``metrics.jsonl``, the learning curve (``bpd.png`` or ``nll.png``),
    sample grids (images) or a density plot (2-D vectors), and an atomically written
    ``checkpoint.pt``. A directory that already holds a run is refused unless ``fit`` is asked to
    ``resume`` it (continuing exactly, bit for bit on the CPU) or to ``overwrite`` it; one process
    at a time may train into a directory.

    Launched with ``torchrun``, each process trains on its shard of every global batch under
    DistributedDataParallel; initialisation runs once and is broadcast; rank 0 writes.

    Args:
        flow: The model (moved to the configured device).
        config: Training hyper-parameters.
        train_data: Image data, vectors, a ``(values, context)`` pair, or a Dataset/DataLoader.
        test_data: Same kinds, for evaluation (None: no evaluation).
        validation_data: Same kinds, evaluated at every evaluation to keep the best weights and
            to stop early (see ``config.patience``). None: ``config.val_fraction`` of the training
            data is held out (seeded by ``config.seed``), or no validation set when it is 0.
        model_name: The registered model family the flow was built from (``"glow"``, ``"nsf"``,
            ...; see ``flowkit.presets.registry``), so that :func:`flowkit.load` can rebuild it;
            None for a custom flow.
        model_config: The model's config (a preset's config dataclass or a plain dict).
        data_info: A plain-dict description of the data stored with the checkpoint (column
            names, standardisation statistics, ...).
        run_info: Extra entries for ``config.json`` (the command line records the run preset).
    """

    def __init__(
        self,
        flow: Flow | Dequantized,
        config: TrainConfig,
        train_data: Any,
        test_data: Any = None,
        *,
        validation_data: Any = None,
        model_name: str | None = None,
        model_config: Any = None,
        data_info: dict[str, Any] | None = None,
        run_info: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(flow, (Flow, Dequantized)):
            raise TypeError(
                f"Trainer expects a flowkit Flow or Dequantized model, got {type(flow).__name__}"
            )
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer expects a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.process: Process = setup(config.device)
        self.flow = flow.to(self.process.device)
        # A Dequantized model owns the discrete likelihood (its bits, its noise). Without a learned
        # dequantizer its weights are the flow's alone: the flow is trained and saved, as a plain
        # flow (8-bit uniform dequantisation) would be.
        scored: Flow | Dequantized = self.flow
        if isinstance(flow, Dequantized) and flow.dequantizer is None:
            self.flow = flow.flow
        self.train_data: TrainingData = as_training_data(train_data, config.num_train)
        self.validation_data = self._validation_split(validation_data)
        self.test_data: TrainingData | None = (
            None if test_data is None else as_training_data(test_data, config.num_test)
        )
        self._configure_perturbations()
        self.model_name, self.model_config = _model_description(model_name, model_config)
        self.data_info: dict[str, Any] = {"kind": "image" if self.train_data.is_image else "vector"}
        self.data_info.update(data_info or {})
        self.data_info["fingerprint"] = self.train_data.fingerprint()
        self.run_info = dict(run_info or {})
        self.output = Path(config.output)
        self._check_data(scored)
        self._check_batch_size()
        self.steps_per_epoch = len(self.train_data) // config.batch_size
        self.schedule = LearningRateSchedule.from_config(config, self.steps_per_epoch)
        self.precision = MixedPrecision(config.precision, self.process.device)
        self.objective: Objective = self._objective()
        # The model trained and initialised: the Dequantized model of the flow, or the flow.
        self.model: nn.Module = (
            self.objective.model if isinstance(self.objective, BitsPerDim) else self.flow
        )
        self._state: TrainState | None = None
        self._metrics: MetricsWriter | None = None
        self._result = TrainResult(0, 0, unit=self.objective.unit)
        self._progress = Progress(
            self.objective.key, config.epochs, enabled=config.progress and self.process.is_main
        )
        self._last_plot = time.monotonic()
        self._plotted_records = 0
        self._last_save: float | None = None
        self._last_density = -math.inf

    def _check_data(self, scored: Flow | Dequantized) -> None:
        """Every split fits the model; what the data tell about themselves goes in data_info."""
        self.train_data.check_against(scored, "training")
        if isinstance(self.train_data, ImageTrainingData):
            # Recorded from the model, so that a run's images are read back as it read them.
            self.data_info.update(self.train_data.model.record())
        if self.test_data is not None:
            self.test_data.check_against(scored, "test")
        if self.validation_data is not None:
            self.validation_data.check_against(scored, "validation")
            self.data_info["validation_examples"] = len(self.validation_data)

    def _check_batch_size(self) -> None:
        config, processes = self.config, self.process.world_size
        parts = config.grad_accumulation * processes
        if config.batch_size % parts:
            raise ConfigError(
                f"batch_size {config.batch_size} must be divisible by grad_accumulation "
                f"({config.grad_accumulation}) times the number of processes ({processes})"
            )
        if len(self.train_data) < config.batch_size:
            raise ConfigError(
                f"the training set has {len(self.train_data)} examples, fewer than one batch "
                f"of {config.batch_size}; lower batch_size"
            )

    def _objective(self) -> Objective:
        if isinstance(self.train_data, ImageTrainingData):
            return BitsPerDim(self.train_data.model)
        if isinstance(self.flow, Dequantized):
            raise TypeError("a Dequantized model needs integer images, got vector data")
        return NatsPerExample(self.flow)

    # --- the run, top to bottom ------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs, or until a step, time or patience limit.

        The limits are ``max_steps``, ``max_minutes`` and ``patience`` (epochs without a better
        validation value: early stopping). With a validation set, the weights of the best
        validation evaluation are kept in the checkpoint (``best``; what :func:`flowkit.load`
        returns by default) and the result's ``best`` gives its step, epoch, validation and test
        values.

        Args:
            resume: Continue the run in ``config.output`` from its checkpoint (a fresh start if
                the directory holds no run; refused if it holds one without its checkpoint).
                Settings listed in ``flowkit.train.config.RESUMABLE_SETTINGS`` (the learning
                rate, epochs, step and time limits, logging, evaluation and sampling cadence, ...)
                may differ from the checkpoint's and take effect (a new learning rate: the
                schedule recomputed from it at the resumed step; under a decaying
                ``lr_decay``, epochs and max_steps only where the decay's last step stays the
                same); any other difference raises :class:`ResumeMismatchError` listing them.
            overwrite: Remove the run that ``config.output`` holds (its checkpoints, metrics,
                curves and samples) and start afresh.

        Raises:
            RunExistsError: ``config.output`` holds a run and neither flag is set.
            RunLockedError: Another process trains into ``config.output``.
            NonFiniteError: The model diverged; ``checkpoint.pt`` keeps the last finite state.
            TrainingInterrupted: Ctrl-C; a checkpoint of the current step was written.
        """
        run = RunDirectory(self.config.output)
        ready = True
        try:
            if self.process.is_main:
                run.open(resume=resume, overwrite=overwrite)
        except BaseException:
            ready = False
            raise
        finally:
            self._agree(ready)
        try:
            return self._fit(run, resume)
        finally:
            if self._metrics is not None:
                self._metrics.close()
            run.close()

    def _fit(self, run: RunDirectory, resume: bool) -> TrainResult:
        result = self._result
        state, fresh = self._start(run, resume)
        self._state = state
        result.steps, result.epochs_completed, result.output = state.step, state.epoch, self.output
        model = self._step_model()
        self._open_outputs(run, state, fresh=fresh)
        if fresh:
            self._end_of_epoch(state, run, "start")
        # Ctrl-C only sets a flag, so the step in flight completes and the checkpoint holds a
        # consistent state.
        steps_before = state.step
        with _InterruptFlag() as interrupt:
            self._train_epochs(state, model, run, interrupt)
            self._finish(state, run, steps_before)
        self._progress.finish()
        self._plot(run, final=True)
        result.steps, result.epochs_completed = state.step, state.epoch
        result.best = _best_summary(state.best)
        result.stopped_early = state.stopped
        return result

    def _start(self, run: RunDirectory, resume: bool) -> tuple[TrainState, bool]:
        """A fresh state, or the checkpoint's: whether it is fresh.

        A fresh start runs the data-dependent initialisation (broadcast from rank 0); a resumed
        one continues exactly, with the resumable settings of this call taking effect.
        """
        config = self.config
        saved = load_checkpoint(run.checkpoint) if resume and run.checkpoint.exists() else None
        # The weight average starts as a copy of the flow, so it is made after initialisation.
        if saved is None:
            self.train_data.initialize(
                self.model, config.init_batch_size, config.seed, self.process.device
            )
            return self._new_state(), True
        self._check_resumable(saved, run.checkpoint)
        state = self._new_state()
        # No schedule to restore: the learning rate follows from the step and this call's
        # settings, so a new lr takes effect from the next step.
        state.load_state_dict(saved)
        self.precision.load_state_dict(saved.get("grad_scaler"))
        # A resumed run stopped early goes on if its patience was raised (or removed).
        if state.stopped and state.best is not None:
            waited = state.epoch - int(state.best["epoch"])
            state.stopped = config.patience is not None and waited >= config.patience
        return state, False

    def _step_model(self) -> nn.Module:
        """The module a training step calls: the objective, wrapped for processes and compiled.

        The objective is a module so that DistributedDataParallel can wrap it. Wrapping
        broadcasts rank 0's parameters through .data, which version-keyed caches cannot see.
        """
        model: nn.Module = (
            DistributedDataParallel(self.objective) if self.process.distributed else self.objective
        )
        self.flow.clear_caches()
        if self.config.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    def _train_epochs(
        self, state: TrainState, model: nn.Module, run: RunDirectory, interrupt: _InterruptFlag
    ) -> None:
        """The loop: one global batch per step, each process taking its shard."""
        config = self.config
        session_start, elapsed_before = time.monotonic(), state.elapsed
        while state.epoch < config.epochs and not self._limit_reached(state) and not state.stopped:
            batches = self.train_data.epoch_batches(state.epoch, config.batch_size, config.seed)
            progress = self._progress.start_epoch(
                state.epoch, len(batches), state.batch_in_epoch, state.step
            )
            while state.batch_in_epoch < len(batches) and not self._limit_reached(state):
                self._train_step(state, model, batches[state.batch_in_epoch], run)
                state.elapsed = elapsed_before + time.monotonic() - session_start
                progress.update(1)
                if interrupt.requested:
                    progress.close()
                    self._interrupted(state, run)
                if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                    self._save(state, run)
            progress.close()
            if state.batch_in_epoch < len(batches):
                return  # a step or time limit, mid-epoch
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            # The run's last epoch is always evaluated, also when a step or time limit ends it.
            last = state.epoch == config.epochs or self._limit_reached(state)
            if state.epoch % config.eval_every == 0 or last:
                self._end_of_epoch(state, run, "epoch")
            self._save(state, run, when_due=True)
            if interrupt.requested:
                self._interrupted(state, run)

    def _finish(self, state: TrainState, run: RunDirectory, steps_before: int) -> None:
        """The run's last evaluation, best weights and checkpoint.

        A run stopped by its step or time limit mid-epoch is evaluated as at an epoch end (still
        under the interrupt flag: a Ctrl-C here lets the checkpoint be written).
        """
        if state.batch_in_epoch != 0:
            self._end_of_epoch(state, run, "end")
        if state.best is not None and state.step != steps_before:
            self._write_best(state)
        # The last state is always written, whenever the last epoch-end checkpoint was.
        if state.step != steps_before or state.last_saved_step != state.step:
            self._save(state, run)

    # --- one training step -----------------------------------------------------------------------
    def _train_step(
        self, state: TrainState, model: nn.Module, index: Tensor, run: RunDirectory
    ) -> None:
        config, precision = self.config, self.precision
        batches = [
            self.train_data.batch(part, state.noise, self.process)
            for part in index.chunk(config.grad_accumulation)
        ]
        state.optimizer.zero_grad(set_to_none=True)
        means = accumulate_gradients(model, batches, precision)
        precision.unscale(state.optimizer)
        limit = config.grad_clip if config.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters(), limit)
        # The step's one read by the host: the loss here and summed over processes (every process
        # then agrees on skipping), and the gradient norm (gradients are already averaged).
        loss = means["loss"]
        value, total, norm = torch.stack(
            [loss, all_reduce_sum(loss, self.process), grad_norm.float()]
        ).tolist()
        state.step += 1
        state.batch_in_epoch += 1
        if not (math.isfinite(total) and math.isfinite(norm)):
            overflow = precision.scaler is not None and math.isfinite(total)
            precision.update()  # a float16 scale that overflowed is lowered
            if not overflow:
                self._skip_nonfinite(state, batches, value, norm, run)
            return
        state.nonfinite_streak = 0
        # The learning rate is a function of the step; every group follows the schedule.
        lr = self.schedule(state.step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        precision.step(state.optimizer)
        precision.update()
        if state.ema is not None:
            state.ema.update_parameters(self.flow)
        self._progress.loss(value)
        state.window.append(value)
        self._result.train_losses.append(value)
        if state.step % config.log_every == 0:
            self._log_step(state, lr, norm, means)

    def _log_step(
        self, state: TrainState, lr: float, norm: float, means: dict[str, Tensor]
    ) -> None:
        record = {
            "step": state.step,
            "epoch": state.epoch + 1,
            "time": round(state.elapsed, 3),
            f"train_{self.objective.key}": sum(state.window) / len(state.window),
            "lr": lr,
            "grad_norm": norm,
        }
        for key, value in means.items():
            if key not in ("loss", self.objective.key):
                record[key] = float(value)
        self._write(record)
        state.window = []

    def _skip_nonfinite(
        self, state: TrainState, batches: list[tuple], loss: float, norm: float, run: RunDirectory
    ) -> None:
        """A non-finite step is never applied; too many in a row stop the run (see _diverged)."""
        state.nonfinite_streak += 1
        state.optimizer.zero_grad(set_to_none=True)
        where = self._diagnose(batches, loss)
        warnings.warn(
            f"step {state.step}: non-finite loss ({loss:.4g}) or gradient norm ({norm:.4g}); "
            f"step skipped; {where}",
            RuntimeWarning,
            stacklevel=3,
        )
        self._write(
            {
                "step": state.step,
                "epoch": state.epoch + 1,
                "time": round(state.elapsed, 3),
                "event": "nonfinite",
                "detail": where,
            }
        )
        if state.nonfinite_streak >= self.config.max_nonfinite:
            self._diverged(
                state,
                run,
                f"{state.nonfinite_streak} consecutive steps had a non-finite loss or gradient "
                f"(last: {where})",
            )

    # --- end of an epoch: evaluation, samples, curves ---------------------------------------------
    def _end_of_epoch(self, state: TrainState, run: RunDirectory, event: str) -> None:
        # Evaluation, validation and samples see the model in evaluation mode (no dropout, no
        # estimator draws or power iterations), and training resumes in the mode it had.
        with _evaluation_mode(state.averaged_flow):
            self._evaluate_epoch(state, run, event)

    def _evaluate_epoch(self, state: TrainState, run: RunDirectory, event: str) -> None:
        config = self.config
        evaluated = state.averaged_flow
        record: dict[str, Any] = {
            "step": state.step,
            "epoch": state.epoch,
            "time": round(state.elapsed, 3),
            "event": event,
        }
        if self.test_data is not None:
            value = self.evaluate(evaluated)
            record[f"test_{self.objective.key}"] = value
            if not math.isfinite(value) and event != "start":
                self._write(record)
                self._diverged(
                    state, run, f"the test {self.objective.unit} is {value} after step {state.step}"
                )
            self._result.test_history.append((state.step, value))
        if self.validation_data is not None:
            self._validate(state, run, evaluated, record, event)
        # The run's last evaluation: its plots are drawn whatever their cadence.
        final = (
            event == "end"
            or state.epoch >= config.epochs
            or state.stopped
            or self._limit_reached(state)
        )
        if (
            self.process.is_main
            and event != "start"
            and (state.epoch % config.sample_every == 0 or event == "end")
        ):
            if self.train_data.is_image:
                nonfinite = self.write_samples(evaluated, state.epoch)
                if any(nonfinite.values()):
                    record["nonfinite_samples"] = nonfinite
            elif (
                isinstance(self.train_data, VectorTrainingData)
                and isinstance(evaluated, Flow)
                and math.prod(self.flow.event_shape) == 2
                and not self.train_data.conditional
                and (final or time.monotonic() - self._last_density > PLOT_INTERVAL)
            ):
                # Drawn as rarely as the curve: a table's epochs can be a step long.
                plot_density_2d(evaluated, self.train_data.values, run.path / "density.png")
                self._last_density = time.monotonic()
        self._write(record)
        self._plot(run, final=final)

    def _validate(
        self,
        state: TrainState,
        run: RunDirectory,
        evaluated: Flow | Dequantized,
        record: dict[str, Any],
        event: str,
    ) -> None:
        """Evaluate the validation set; keep the best weights; stop after ``patience`` epochs."""
        assert self.validation_data is not None
        config, key = self.config, self.objective.key
        value = self.validation_data.evaluate(evaluated, config.test_batch_size, self.process)
        record[f"val_{key}"] = value
        if not math.isfinite(value):
            if event != "start":
                self._write(record)
                self._diverged(
                    state,
                    run,
                    f"the validation {self.objective.unit} is {value} after step {state.step}",
                )
            return
        self._result.validation_history.append((state.step, value))
        best = state.best
        if best is None or value < best["validation"]:
            # The evaluated weights (the average, when one is kept) are the ones worth keeping.
            weights = {name: t.detach().clone() for name, t in evaluated.state_dict().items()}
            state.best = {
                "step": state.step,
                "epoch": state.epoch,
                "validation": value,
                "test": record.get(f"test_{key}"),
                "model": weights,
            }
        elif config.patience is not None and state.epoch - best["epoch"] >= config.patience:
            state.stopped = True
            record["stopped_early"] = True

    def _write_best(self, state: TrainState) -> None:
        """One record of the best validation evaluation and the test value at it."""
        assert state.best is not None
        key, best = self.objective.key, state.best
        record: dict[str, Any] = {
            "step": state.step,
            "epoch": state.epoch,
            "time": round(state.elapsed, 3),
            "event": "best",
            "best_step": best["step"],
            "best_epoch": best["epoch"],
            f"best_val_{key}": best["validation"],
        }
        if best.get("test") is not None:
            record[f"best_test_{key}"] = best["test"]
        record["stopped_early"] = state.stopped
        self._write(record)

    # --- checkpoints and stopping -----------------------------------------------------------------
    def _save(self, state: TrainState, run: RunDirectory, *, when_due: bool = False) -> None:
        """Write ``checkpoint.pt``, unless the state is not finite: then the last good one stays.

        ``when_due`` (epoch ends): only if ``checkpoint_seconds`` passed since the last write of
        this session, or none was written yet; tiny epochs would otherwise rewrite (and sync) the
        whole checkpoint every few steps.
        """
        if not self.process.is_main or state.nonfinite_streak or not _finite_parameters(self.flow):
            return
        now = time.monotonic()
        if (
            when_due
            and self._last_save is not None
            and now - self._last_save < self.config.checkpoint_seconds
        ):
            return
        if self._metrics is not None:
            state.metrics_records = self._metrics.count
        save_checkpoint(self._checkpoint(state), run.checkpoint)
        state.last_saved_step = state.step
        self._last_save = now

    def _checkpoint(self, state: TrainState) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            **state.state_dict(),
            "grad_scaler": self.precision.state_dict(),
            "model_name": self.model_name,
            "model_config": self.model_config,
            "train_config": self.config.to_dict(),
            "data": self.data_info,
            "versions": versions(),
        }

    def _diverged(self, state: TrainState, run: RunDirectory, reason: str) -> None:
        if self.process.is_main:
            save_checkpoint(self._checkpoint(state), run.diverged_checkpoint)
        if state.last_saved_step is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"{run.checkpoint} keeps the last finite state (step {state.last_saved_step})"
        raise NonFiniteError(
            f"training stopped at step {state.step}: {reason}; {kept}; the diverged state is in "
            f"{run.diverged_checkpoint}; lower the learning rate, lengthen the warm-up or set "
            "grad_clip"
        )

    def _interrupted(self, state: TrainState, run: RunDirectory) -> None:
        self._save(state, run)
        self._plot(run, final=True)
        raise TrainingInterrupted(
            f"interrupted at step {state.step}; continue with --resume", state.step
        )

    def _limit_reached(self, state: TrainState) -> bool:
        config = self.config
        if config.max_steps is not None and state.step >= config.max_steps:
            return True
        return config.max_minutes is not None and state.elapsed >= 60.0 * config.max_minutes

    # --- setting up -------------------------------------------------------------------------------
    def _validation_split(self, data: Any) -> TrainingData | None:
        """The validation view: the data given, or ``val_fraction`` of the training examples."""
        config = self.config
        view: TrainingData | None = None
        if data is not None:
            view = as_training_data(data)
        elif config.val_fraction > 0:
            kept, held = split_indices(
                len(self.train_data),
                config.val_fraction,
                config.seed,
                stream=1,
                owner="TrainConfig",
                name="val",
                source="the training data",
            )
            view = self.train_data.take(torch.as_tensor(held))
            self.train_data = self.train_data.take(torch.as_tensor(kept))
        if view is None and config.patience is not None:
            raise ConfigError(
                f"patience={config.patience} (early stopping) needs a validation set: set "
                "val_fraction > 0 or give validation data"
            )
        return view

    def _configure_perturbations(self) -> None:
        """Hand the augmentation and training-noise settings to the training data (never test)."""
        config = self.config
        if not self.train_data.is_image and (config.augment_shift > 0 or config.augment_flip):
            raise ConfigError(
                "augment_shift and augment_flip apply to images; the training data are vectors"
            )
        if isinstance(self.train_data, ImageTrainingData):
            self.train_data.augment_shift = config.augment_shift
            self.train_data.augment_flip = config.augment_flip
        self.train_data.noise_std = _training_noise(self.flow, config.noise_std)

    def _parameters(self) -> list[nn.Parameter]:
        return [p for p in self.flow.parameters() if p.requires_grad]

    def _new_state(self) -> TrainState:
        config = self.config
        # Adamax (official Glow), Adam or AdamW; the weight average's decay (and beta2, unless
        # given) follows the official rule 1 - 1 / (steps_per_epoch * polyak_epochs).
        optimizer = build_optimizer(self._parameters(), config, self.steps_per_epoch)
        decay = polyak_decay(config, self.steps_per_epoch)
        average = _warmed_up_average(decay) if config.ema_warmup else get_ema_multi_avg_fn(decay)
        ema = (
            AveragedModel(self.flow, multi_avg_fn=average, use_buffers=False)
            if config.ema
            else None
        )
        noise = torch.Generator().manual_seed(config.seed + 1)
        return TrainState(self.flow, optimizer, ema, noise)

    def _check_resumable(self, saved: dict[str, Any], path: Path) -> None:
        """Refuse to resume with settings that would make the continued run a different run."""
        saved_train = dict(saved.get("train_config") or {})
        saved_data = saved.get("data") or {}
        # What the image model records with the data (its bits) was a train setting in earlier
        # runs, recorded with the data then too: it is compared there.
        recorded = (
            self.train_data.model.record() if isinstance(self.train_data, ImageTrainingData) else {}
        )
        for name in recorded:
            saved_train.pop(name, None)
        try:
            previous = TrainConfig.from_dict(saved_train)
        except ConfigError as error:
            raise CheckpointError(f"{path} records invalid train settings: {error}") from None
        changed = {
            name: values
            for name, values in self.config.differences(previous).items()
            if name not in RESUMABLE_SETTINGS
        }
        if saved.get("model_config") is not None and _jsonable(saved["model_config"]) != _jsonable(
            self.model_config
        ):
            changed["model"] = (saved.get("model_config"), self.model_config)
        if saved_data.get("fingerprint") not in (None, self.data_info["fingerprint"]):
            changed["training data"] = ("the checkpoint's", "other examples")
        for name, value in recorded.items():
            if saved_data.get(name) not in (None, value):
                changed[name] = (saved_data[name], value)
        # A decay ends at the run's last step: moving it would bend the rest of the schedule.
        last = horizon(previous, self.steps_per_epoch)
        new_last = horizon(self.config, self.steps_per_epoch)
        if previous.lr_decay != "constant" and not changed and last != new_last:
            raise ResumeMismatchError(
                f"cannot resume {path} with its {previous.lr_decay} learning-rate decay ending at "
                f"step {new_last} instead of step {last} (the decay ends at max_steps or after "
                "epochs epochs, whichever comes first); keep epochs and max_steps as they were, "
                "or start a new run with another output directory or --overwrite"
            )
        if changed:
            listed = "; ".join(
                f"{name}: {old!r} -> {new!r}" for name, (old, new) in sorted(changed.items())
            )
            raise ResumeMismatchError(
                f"cannot resume {path} with different settings ({listed}); only "
                f"{', '.join(sorted(RESUMABLE_SETTINGS - {'output'}))} may change on resume; "
                "start a new run with another output directory or --overwrite"
            )

    def _open_outputs(self, run: RunDirectory, state: TrainState, fresh: bool) -> None:
        if not self.process.is_main:
            return
        path = run.path / "metrics.jsonl"
        if fresh:
            path.unlink(missing_ok=True)
        tensorboard = run.path / "tensorboard" if self.config.tensorboard else None
        self._metrics = MetricsWriter(path, tensorboard)
        if not fresh:
            # The file keeps what the checkpoint saw (records after it belong to lost steps); a
            # resumed run's result holds the whole run's evaluations, read back from it.
            if state.metrics_records is not None:
                self._metrics.truncate_to(state.metrics_records)
            else:
                self._metrics.truncate_after(state.step)
            records = read_metrics(path)
            for key, history in (
                (f"test_{self.objective.key}", self._result.test_history),
                (f"val_{self.objective.key}", self._result.validation_history),
            ):
                history[:] = [(r["step"], r[key]) for r in records if key in r]
        settings = {
            **self.run_info,
            "model_name": self.model_name,
            "model": self.model_config,
            "train": self.config.to_dict(),
            "data": self.data_info,
            "versions": versions(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (run.path / "config.json").write_text(
            json.dumps(settings, indent=2, default=_json_default) + "\n"
        )

    def _agree(self, ready: bool) -> None:
        """Under several processes, rank 0's directory checks decide for everyone."""
        if not self.process.distributed:
            return
        flag = torch.tensor([1.0 if ready else 0.0], device=self.process.device)
        if self.process.is_main:
            flag = flag * self.process.world_size
        total = all_reduce_sum(flag, self.process)
        if float(total) < self.process.world_size and ready:
            raise RuntimeError("rank 0 could not open the output directory; see its error")

    # --- outputs ----------------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(record)
        self._progress.record(record)

    def _plot(self, run: RunDirectory, *, final: bool) -> None:
        # Redrawing costs a few tenths of a second: at most once a minute, and at the end, and
        # never twice for the same records.
        if self._metrics is None or self._metrics.count == self._plotted_records:
            return
        if not (final or time.monotonic() - self._last_plot > PLOT_INTERVAL):
            return
        if self.train_data.is_image:
            plot_curve(
                read_metrics(self._metrics.path),
                run.path / "bpd.png",
                key="bpd",
                ylabel="bits / dim",
            )
        else:
            plot_curve(
                read_metrics(self._metrics.path),
                run.path / "nll.png",
                key="nll",
                ylabel="negative log-likelihood (nats per example)",
            )
        self._last_plot = time.monotonic()
        self._plotted_records = self._metrics.count

    @property
    def averaged_flow(self) -> Flow | Dequantized:
        """The flow with the Polyak-averaged weights (what evaluation and sampling use).

        The raw, optimised weights stay in ``trainer.flow``; without ``config.ema`` both are the
        same.
        """
        return self.flow if self._state is None else self._state.averaged_flow

    @property
    def state(self) -> TrainState | None:
        """The training state of the last :meth:`fit` (None before)."""
        return self._state

    @torch.no_grad()
    def evaluate(
        self, flow: Flow | Dequantized | None = None, *, dtype: torch.dtype | None = None
    ) -> float:
        """Mean test bits/dim (nats per example for vectors) over the test set.

        The set is sharded over processes; images are dequantised with fixed noise.
        """
        if self.test_data is None:
            raise ValueError("Trainer.evaluate needs test data")
        flow = self.flow if flow is None else flow
        with _evaluation_mode(flow):
            return self.test_data.evaluate(
                flow, self.config.test_batch_size, self.process, dtype=dtype
            )

    def write_samples(self, flow: Flow | Dequantized, epoch: int) -> dict[str, int]:
        """Write one sample grid per temperature (same noise every epoch, so grids are comparable).

        Returns the count of non-finite sample values per temperature (drawn mid-grey).
        """
        assert isinstance(self.train_data, ImageTrainingData), "vector runs draw no sample grids"
        context = self.train_data.sample_context(self.config.num_samples, self.process.device)
        model = image_model(flow, self.train_data.model)
        return {
            f"{temperature:.2f}": write_sample_grid(
                model,
                self.output / "samples" / f"epoch{epoch:04d}_t{temperature:.2f}.png",
                num=self.config.num_samples,
                temperature=temperature,
                context=context,
                seed=self.config.seed,
            )
            for temperature in self.config.temperatures
        }

    def _diagnose(self, batches: list[tuple], loss: float) -> str:
        if not math.isfinite(loss):
            for inputs in batches:
                with self.precision.autocast():
                    name = locate_nonfinite(self.objective, *inputs)
                if name:
                    return f"first non-finite output at {name}"
            return "no layer output was non-finite (the loss was)"
        name = first_nonfinite_gradient(self.flow)
        return f"first non-finite gradient in {name}" if name else "gradient norm overflowed"


@contextlib.contextmanager
def _evaluation_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in evaluation mode for the block, each submodule's own mode restored after."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


class _InterruptFlag:
    """Within the block, the first Ctrl-C sets ``requested``; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _warmed_up_average(decay: float) -> Any:
    """A weight-average update whose decay warms up as ``min(decay, (1 + n) / (10 + n))``.

    ``n`` is the number of updates the average has had (torch's ``AveragedModel.n_averaged``,
    saved with it, so a resumed run continues the schedule). Early on the average follows the
    weights closely; after about ``10 / (1 - decay)`` updates it is the constant-decay average.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], count: Tensor) -> None:
        n = float(count)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        if averaged and torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:
            for mean, value in zip(averaged, current):
                mean.copy_(mean * (1 - weight) + value * weight)

    return update


def _model_description(
    model_name: str | None, model_config: Any
) -> tuple[str | None, dict[str, Any] | None]:
    """The model family's name and its config as a plain dict, for checkpoints and config.json."""
    if model_config is None:
        return model_name, None
    if dataclasses.is_dataclass(model_config) and not isinstance(model_config, type):
        values = dataclasses.asdict(model_config)
    elif isinstance(model_config, dict):
        values = dict(model_config)
    else:
        raise TypeError(
            "Trainer expects model_config as a dataclass or a dict, got "
            f"{type(model_config).__name__}"
        )
    # Format-1 configs carried their family as kind="glow".
    kind = values.pop("kind", None)
    return model_name or kind, values


def _best_summary(best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best evaluation without its weights."""
    if best is None:
        return None
    return {key: value for key, value in best.items() if key != "model"}


def _training_noise(flow: Flow | Dequantized, noise_std: float) -> float:
    """The training noise: the model's own where it has one (it denoises with it), else config's.

    ``noise_std`` 0 (the default) defers to the model; any other value must equal the model's.
    """
    owned = flow.training_noise_std if isinstance(flow, Flow) else None
    if owned is None:
        return noise_std
    if noise_std not in (0.0, owned):
        raise ConfigError(
            f"noise_std={noise_std} disagrees with the training noise of the "
            f"{type(flow).__name__} model ({owned}), which it also removes from its samples; "
            "leave noise_std at 0 and set the model's noise_std instead"
        )
    return owned


def _finite_parameters(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, Tensor):
        # A table's split (row indices) is kept in checkpoint.pt; config.json says how many.
        return f"{value.numel()} values (in checkpoint.pt)"
    raise TypeError(f"cannot record {type(value).__name__} in config.json")
