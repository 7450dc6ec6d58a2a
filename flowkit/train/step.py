"""The arithmetic of one training step: micro-batches, autocast and loss scaling.

The trainer decides what a step means (skip it, log it, checkpoint it); this module only computes
the gradients of one batch, split into micro-batches, in the configured precision.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from flowkit.train.config import ConfigError

__all__ = ["MixedPrecision", "accumulate_gradients"]

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

# torch's (private, version-dependent) probes of the CPU's half-precision instructions.
_HALF_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


class MixedPrecision:
    """Autocast around the model and, in float16, a gradient scaler: one object per run.

    ``"float32"`` is a no-op. ``"bfloat16"`` runs the model under ``torch.autocast``; bfloat16
    has float32's range, so gradients need no scaling. ``"float16"`` adds
    ``torch.amp.GradScaler``: the loss is multiplied by a running scale before the backward pass,
    the gradients are unscaled before clipping, and a step whose scaled gradients overflowed is
    skipped by the scaler, which then lowers the scale (its state is checkpointed).

    Args:
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: The device the model runs on.
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in _DTYPES:
            raise ConfigError(f"precision must be one of {tuple(_DTYPES)}, got {precision!r}")
        self.name = precision
        self.dtype = _DTYPES[precision]
        self.device_type = device.type
        if self.dtype is not None and self.device_type not in ("cpu", "cuda"):
            raise ConfigError(
                f"precision {precision!r} needs a CPU or CUDA device, got {device}; use float32"
            )
        self.scaler: Any = None
        if precision == "float16":
            self.scaler = _grad_scaler(self.device_type)
        if self.dtype is not None and self.device_type == "cpu" and not _native_half_on_cpu():
            warnings.warn(
                f"precision {precision!r}: this CPU has no native bfloat16 or float16 "
                "instructions (AVX-512 BF16 or AMX), so half-precision networks run emulated "
                "and usually slower than float32",
                UserWarning,
                stacklevel=3,
            )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context the model's forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        """Backpropagate ``loss`` (scaled in float16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: Optimizer) -> None:
        """Bring the gradients back to their true scale, before clipping or reading them."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Optimizer) -> None:
        """Apply the step (the scaler skips it if the scaled gradients overflowed)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self) -> None:
        """End the step: the scaler adjusts its scale (call after every :meth:`unscale`)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state (None without one)."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s output."""
        if self.scaler is not None and state is not None:
            self.scaler.load_state_dict(state)


def _native_half_on_cpu() -> bool:
    """Whether the CPU computes bfloat16 in hardware (True where torch cannot tell)."""
    probes = [getattr(torch.cpu, name, None) for name in _HALF_PROBES]
    known = [probe for probe in probes if callable(probe)]
    return not known or any(bool(probe()) for probe in known)


def _grad_scaler(device_type: str) -> Any:
    scaler_class = getattr(torch.amp, "GradScaler", None)
    if scaler_class is not None:
        return scaler_class(device_type)
    if device_type == "cuda":  # torch < 2.3
        return torch.cuda.amp.GradScaler()
    raise ConfigError(
        f"precision 'float16' on the CPU needs torch >= 2.3 (this is {torch.__version__}); "
        "use bfloat16, which needs no loss scaling"
    )


def accumulate_gradients(
    model: nn.Module, batches: Sequence[tuple], precision: MixedPrecision
) -> dict[str, Tensor]:
    """Forward and backward passes over the micro-batches of one step.

    Each micro-batch's loss is divided by their number, so the accumulated gradient is that of
    the whole batch's mean loss. Under DistributedDataParallel the gradients are averaged over
    processes once, after the last micro-batch.

    Returns:
        The batch's mean of every entry of the objective's output (``loss``, the per-example
        value and the model's extra metrics), detached, as 0-d float32 tensors on the device: no
        value is read by the host here.
    """
    count = len(batches)
    no_sync = getattr(model, "no_sync", None)
    totals: dict[str, Tensor] = {}
    for position, inputs in enumerate(batches):
        last = position == count - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with precision.autocast():
                out = model(*inputs)
            precision.backward(out["loss"] / count)
        for key, value in out.items():
            mean = value.detach().float().mean() / count
            totals[key] = mean if key not in totals else totals[key] + mean
    return totals
