"""The Trainer: from images (or vectors) to a trained flow, bits/dim, samples and checkpoints."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from flowkit.bijectors.cache import clear_caches
from flowkit.distributions import Flow
from flowkit.initialization import initialize
from flowkit.performance import tune_allocator
from flowkit.train.checkpoint import load_checkpoint, save_checkpoint
from flowkit.train.config import TrainConfig
from flowkit.train.data import TrainingData, as_training_data
from flowkit.train.diagnostics import first_nonfinite_gradient, locate_nonfinite
from flowkit.train.distributed import Process, all_reduce_sum, setup
from flowkit.train.metrics import MetricsWriter, plot_bpd_curve, read_metrics
from flowkit.train.objectives import BitsPerDim

__all__ = ["CHECKPOINT_FORMAT", "NonFiniteError", "TrainResult", "Trainer"]

CHECKPOINT_FORMAT = 1


class NonFiniteError(RuntimeError):
    """Training stopped after too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """What a finished :meth:`Trainer.fit` reports.

    Attributes:
        steps: Optimizer steps attempted in the whole run (skipped non-finite steps included).
        epochs_completed: Whole epochs done.
        test_bpd: ``(step, value)`` per evaluation: bits/dim for images, negative log-likelihood in
            nats per example for vector data; evaluated with the averaged weights when
            ``config.ema`` is on.
        train_losses: Loss of every applied step of this call (resumed runs: from the resume on).
        output: The output directory.
    """

    steps: int
    epochs_completed: int
    test_bpd: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    output: Path | None = None

    @property
    def final_test_bpd(self) -> float | None:
        """The last evaluated test bits/dim (or nats for vector data)."""
        return self.test_bpd[-1][1] if self.test_bpd else None


class Trainer:
    """Trains a :class:`~flowkit.Flow` by maximum likelihood, reading top to bottom like one loop.

    For images (uint8 ``flowkit.data.ImageData``) the objective is bits per dimension with uniform
    dequantisation; for float vectors (tensors or numpy arrays, optionally with a context) it is the
    negative log-likelihood in nats. Every run writes ``metrics.jsonl``, a bits/dim curve
    (``bpd.png``), sample grids (images) and an atomically written ``checkpoint.pt`` to
    ``config.output``; ``fit(resume=True)`` continues exactly where the checkpoint left off (on the
    CPU the resumed run reproduces the uninterrupted one bit for bit).

    Launched with ``torchrun``, each process trains on its shard of every global batch under
    DistributedDataParallel; initialisation runs once and is broadcast; rank 0 writes.

    Args:
        flow: The model (moved to the configured device).
        config: Training hyper-parameters.
        train_data: ``ImageData``, a float tensor/array of vectors, or a ``(values, context)`` pair.
        test_data: Same kinds, for evaluation (None: no evaluation).
        model_config: Plain-dict description stored in checkpoints so the model can be rebuilt
            (``flowkit.train.load_flow`` understands Glow configs).
    """

    def __init__(
        self,
        flow: Flow,
        config: TrainConfig,
        train_data: Any,
        test_data: Any = None,
        *,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        tune_allocator()  # large activations stay on the heap instead of being re-mapped every step
        self.process: Process = setup(config.device)
        self.flow = flow.to(self.process.device)
        self.train_data: TrainingData = as_training_data(
            train_data, config.n_bits, config.num_train
        )
        self.test_data: TrainingData | None = (
            None
            if test_data is None
            else as_training_data(test_data, config.n_bits, config.num_test)
        )
        self.model_config = model_config
        self.output = Path(config.output)
        self.train_data.check_against(self.flow, "training")
        if self.test_data is not None:
            self.test_data.check_against(self.flow, "test")
        if config.batch_size % self.process.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be divisible by the number of processes "
                f"({self.process.world_size})"
            )
        self.steps_per_epoch = len(self.train_data) // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set has {len(self.train_data)} examples, fewer than one batch "
                f"of {config.batch_size}"
            )

    # ------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or ``config.max_steps`` steps); see the class doc."""
        config, process, flow = self.config, self.process, self.flow
        checkpoint_path = self.output / "checkpoint.pt"
        if process.is_main:
            self.output.mkdir(parents=True, exist_ok=True)

        # Adamax (official) or Adam; beta2 and the weight average's decay follow the official
        # rule 1 - 1 / (steps_per_epoch * polyak_epochs).
        beta2 = 1.0 - 1.0 / max(2.0, self.steps_per_epoch * config.polyak_epochs)
        optimizer_class = torch.optim.Adamax if config.optimizer == "adamax" else torch.optim.Adam
        parameters = [p for p in flow.parameters() if p.requires_grad]
        optimizer = optimizer_class(
            parameters, lr=config.lr, betas=(config.beta1, beta2), weight_decay=config.weight_decay
        )
        warmup_steps = max(1.0, config.warmup_epochs * self.steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup_steps)
        )

        # Start fresh (data-dependent init, broadcast from rank 0) or continue from the checkpoint.
        noise = torch.Generator().manual_seed(config.seed + 1)
        step, epoch, batch_in_epoch = 0, 0, 0
        state = load_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None
        if state is not None:
            flow.load_state_dict(state["model"])
        else:
            init_batch = self.train_data.init_batch(
                config.init_batch_size, config.seed, process.device
            )
            initialize(flow, *init_batch)
        ema = (
            AveragedModel(flow, multi_avg_fn=get_ema_multi_avg_fn(beta2), use_buffers=False)
            if config.ema
            else None
        )
        self._ema = ema
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            noise.set_state(state["noise_rng"])
            torch.set_rng_state(state["torch_rng"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]

        # The objective is a module so that DistributedDataParallel can wrap it. Wrapping
        # broadcasts rank 0's parameters through .data, which version-keyed caches cannot see.
        objective: nn.Module = (
            BitsPerDim(flow, config.n_bits)
            if self.train_data.is_image
            else _NegativeLogLikelihood(flow)
        )
        model = DistributedDataParallel(objective) if process.distributed else objective
        clear_caches(flow)

        metrics = (
            MetricsWriter(
                self.output / "metrics.jsonl",
                self.output / "tensorboard" if config.tensorboard else None,
            )
            if process.is_main
            else None
        )
        if metrics is not None:
            if state is not None:
                metrics.truncate_after(step)
            elif metrics.path.exists():
                metrics.path.unlink()
        result = TrainResult(steps=step, epochs_completed=epoch, output=self.output)
        if metrics is not None and state is not None:
            result.test_bpd = [
                (r["step"], r["test_bpd"]) for r in read_metrics(metrics.path) if "test_bpd" in r
            ]

        def checkpoint() -> None:
            if process.is_main:
                save_checkpoint(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "model": flow.state_dict(),
                        "ema": None if ema is None else ema.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                        "epoch": epoch,
                        "batch_in_epoch": batch_in_epoch,
                        "noise_rng": noise.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "train_config": config.to_dict(),
                        "model_config": self.model_config,
                    },
                    checkpoint_path,
                )

        last_plot = [-math.inf]

        def evaluate_and_sample(label: str) -> None:
            evaluated = flow if ema is None else ema.module
            record: dict[str, Any] = {"step": step, "epoch": epoch, "event": label}
            if self.test_data is not None:
                record["test_bpd"] = self.evaluate(evaluated)
                result.test_bpd.append((step, record["test_bpd"]))
            if (
                process.is_main
                and self.train_data.is_image
                and label != "start"
                and (epoch % config.sample_every == 0 or label == "end")
            ):
                nonfinite = self.write_samples(evaluated, epoch)
                if any(nonfinite.values()):
                    record["nonfinite_samples"] = nonfinite
            if metrics is not None:
                metrics.write(record)
                # Redrawing costs a few tenths of a second: at most once a minute, and at the end.
                if label == "end" or epoch >= config.epochs or time.monotonic() - last_plot[0] > 60:
                    self._plot(read_metrics(metrics.path))
                    last_plot[0] = time.monotonic()

        if state is None:
            evaluate_and_sample("start")

        # The loop: one global batch per step, each process taking its shard.
        consecutive_nonfinite = 0
        running: list[float] = []
        stop = config.max_steps is not None and step >= config.max_steps
        while epoch < config.epochs and not stop:
            batches = self.train_data.epoch_batches(epoch, config.batch_size, config.seed)
            progress = tqdm(
                total=len(batches),
                initial=batch_in_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not (config.progress and process.is_main),
                leave=False,
            )
            started = time.perf_counter()
            while batch_in_epoch < len(batches):
                inputs = self.train_data.batch(batches[batch_in_epoch], noise, process)
                out = model(*inputs)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    parameters, config.grad_clip if config.grad_clip is not None else math.inf
                )
                # Gradients are already averaged over processes, so every process agrees on this.
                finite = bool(torch.isfinite(all_reduce_sum(loss.detach(), process))) and bool(
                    torch.isfinite(grad_norm)
                )
                step += 1
                batch_in_epoch += 1
                progress.update(1)
                if not finite:
                    consecutive_nonfinite += 1
                    optimizer.zero_grad(set_to_none=True)
                    where = self._diagnose(inputs, loss)
                    message = f"step {step}: non-finite loss ({float(loss.detach()):.4g}) or gradient norm ({float(grad_norm):.4g}); step skipped; {where}"
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    if metrics is not None:
                        metrics.write(
                            {"step": step, "epoch": epoch, "event": "nonfinite", "detail": where}
                        )
                    if consecutive_nonfinite >= config.max_nonfinite:
                        checkpoint()
                        raise NonFiniteError(
                            f"training stopped: {consecutive_nonfinite} consecutive steps had a non-finite "
                            f"loss or gradient (last: {where}). The last good state is in {checkpoint_path}; "
                            "lower the learning rate, lengthen the warm-up or set grad_clip"
                        )
                    continue
                consecutive_nonfinite = 0
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(flow)
                loss_value = float(loss.detach())
                running.append(loss_value)
                result.train_losses.append(loss_value)
                if metrics is not None and step % config.log_every == 0:
                    elapsed = time.perf_counter() - started
                    metrics.write(
                        {
                            "step": step,
                            "epoch": epoch,
                            "train_bpd": sum(running) / len(running),
                            "lr": scheduler.get_last_lr()[0],
                            "grad_norm": float(grad_norm),
                            "examples_per_s": config.batch_size * len(running) / max(elapsed, 1e-9),
                        }
                    )
                    progress.set_postfix(loss=f"{sum(running) / len(running):.3f}")
                    running, started = [], time.perf_counter()
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    checkpoint()
                if config.max_steps is not None and step >= config.max_steps:
                    stop = True
                    break
            progress.close()
            if batch_in_epoch >= len(batches):
                epoch, batch_in_epoch = epoch + 1, 0
                if epoch % config.eval_every == 0 or epoch == config.epochs:
                    evaluate_and_sample("epoch")
            checkpoint()

        # Finish: final evaluation and samples unless the last epoch just did them.
        if stop and batch_in_epoch != 0:
            evaluate_and_sample("end")
            checkpoint()
        result.steps, result.epochs_completed = step, epoch
        if metrics is not None:
            metrics.close()
        return result

    @property
    def averaged_flow(self) -> Flow:
        """The flow with the Polyak-averaged weights (what evaluation and sampling use).

        The raw, optimised weights stay in ``trainer.flow``; without ``config.ema`` both are the same.
        """
        ema = getattr(self, "_ema", None)
        return self.flow if ema is None else ema.module

    def _plot(self, records: list[dict[str, Any]]) -> None:
        label = "bits / dim" if self.train_data.is_image else "negative log-likelihood (nats)"
        plot_bpd_curve(records, self.output / "bpd.png", ylabel=label)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, flow: Flow | None = None, *, dtype: torch.dtype | None = None) -> float:
        """Mean test bits/dim (nats for vectors), sharded over processes, with fixed noise."""
        if self.test_data is None:
            raise ValueError("Trainer.evaluate needs test data")
        flow = self.flow if flow is None else flow
        return self.test_data.evaluate(flow, self.config.test_batch_size, self.process, dtype=dtype)

    @torch.no_grad()
    def write_samples(self, flow: Flow, epoch: int) -> dict[str, int]:
        """Write one sample grid per temperature (same noise every epoch, so grids are comparable).

        A young model's inverse can overflow at high temperature; such pixels are drawn mid-grey
        and counted, never allowed to stop the run. Returns the count of non-finite sample values
        per temperature.
        """
        from flowkit.data import save_image_grid, to_uint8

        nonfinite = {}
        directory = self.output / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        context = self.train_data.sample_context(self.config.num_samples, self.process.device)
        for temperature in self.config.temperatures:
            with torch.random.fork_rng(
                devices=[self.process.device] if self.process.device.type == "cuda" else []
            ):
                torch.manual_seed(self.config.seed)
                if context is None:
                    images = flow.sample(self.config.num_samples, temperature=temperature)
                else:
                    images = flow.sample(context=context, temperature=temperature)
            images = images.float().cpu()
            bad = ~torch.isfinite(images)
            nonfinite[f"{temperature:.2f}"] = int(bad.sum())
            images = images.masked_fill(bad, 0.0)
            path = directory / f"epoch{epoch:04d}_t{temperature:.2f}.png"
            save_image_grid(to_uint8(images, self.config.n_bits), path)
        return nonfinite

    def _diagnose(self, inputs: tuple, loss: Tensor) -> str:
        if not bool(torch.isfinite(loss)):
            context = inputs[1] if len(inputs) > 1 else None
            name = locate_nonfinite(
                self.flow, inputs[0], context if self.train_data.conditional else None
            )
            return (
                f"first non-finite output at {name}"
                if name
                else "no layer output was non-finite (the loss was)"
            )
        name = first_nonfinite_gradient(self.flow)
        return f"first non-finite gradient in {name}" if name else "gradient norm overflowed"


class _NegativeLogLikelihood(nn.Module):
    """Mean negative log-likelihood in nats, for vector data."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
        nll = -self.flow.log_prob(x, context)
        return {"loss": nll.mean(), "bpd": nll}
