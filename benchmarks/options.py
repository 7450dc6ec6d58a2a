"""Runtime options of a benchmark variant: how a built model runs (layout, precision, compiler).

A variant is a library, keyword arguments for its model builder (``preset``) and runtime options
(``runtime``). Model options that flowkit's preset grows are passed through ``preset`` untouched;
options that wrap any model from the outside live here, one function each, applied in the order of
:data:`RUNTIME_OPTIONS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from benchmarks.models import BenchModel

__all__ = ["RUNTIME_OPTIONS", "Runtime", "apply_runtime"]


@dataclass
class Runtime:
    """How the measurements run a model: input preparation and contexts around each call."""

    device: torch.device
    library: str
    model: BenchModel
    input_transforms: list[Callable[[Tensor], Tensor]] = field(default_factory=list)
    contexts: list[Callable[[], contextlib.AbstractContextManager]] = field(default_factory=list)

    def prepare(self, x: Tensor) -> Tensor:
        """Move ``x`` to the device and apply the input transforms (e.g. memory layout)."""
        x = x.to(self.device)
        for transform in self.input_transforms:
            x = transform(x)
        return x

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Enter every runtime context (e.g. autocast) around a measured call."""
        with contextlib.ExitStack() as stack:
            for make in self.contexts:
                stack.enter_context(make())
            yield


def _threads(runtime: Runtime, value: Any) -> None:
    torch.set_num_threads(int(value))


def _channels_last(runtime: Runtime, value: Any) -> None:
    if value:
        runtime.model.module.to(memory_format=torch.channels_last)
        runtime.input_transforms.append(lambda x: x.contiguous(memory_format=torch.channels_last))


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(runtime: Runtime, value: Any) -> None:
    if value is None:
        return
    if value not in _AUTOCAST_DTYPES:
        raise ValueError(
            f"runtime option autocast expects one of {sorted(_AUTOCAST_DTYPES)}, got {value!r}"
        )
    dtype = _AUTOCAST_DTYPES[value]
    device_type = runtime.device.type
    runtime.contexts.append(lambda: torch.autocast(device_type, dtype=dtype))


def _validation(runtime: Runtime, value: Any) -> None:
    if runtime.library != "flowkit":
        raise ValueError(
            f"runtime option validation applies to flowkit only, not {runtime.library}"
        )
    import flowkit

    flowkit.set_validation(bool(value))


def _compile(runtime: Runtime, value: Any) -> None:
    if not value:
        return
    mode = value if isinstance(value, str) else None
    runtime.model.log_prob = torch.compile(runtime.model.log_prob, mode=mode)


# Applied in this order whatever the order in the spec: compilation must see the final layout.
RUNTIME_OPTIONS: dict[str, Callable[[Runtime, Any], None]] = {
    "threads": _threads,
    "validation": _validation,
    "channels_last": _channels_last,
    "autocast": _autocast,
    "compile": _compile,
}


def apply_runtime(
    model: BenchModel, library: str, device: torch.device, options: dict[str, Any]
) -> Runtime:
    """Apply the runtime ``options`` of a variant to a freshly built ``model`` on ``device``."""
    unknown = sorted(set(options) - set(RUNTIME_OPTIONS))
    if unknown:
        raise ValueError(f"unknown runtime options {unknown}; known: {sorted(RUNTIME_OPTIONS)}")
    model.module.to(device)
    runtime = Runtime(device=device, library=library, model=model)
    for name, apply in RUNTIME_OPTIONS.items():
        if name in options:
            apply(runtime, options[name])
    return runtime
