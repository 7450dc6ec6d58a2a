"""One measurement in this process, described by a JSON spec; prints one JSON line with the result.

Usage: ``python -m benchmarks.measure '<json spec>'`` (or ``python benchmarks/measure.py ...``).
:mod:`benchmarks.run` starts one such process per measurement, so that peak memory, allocator state
and warm caches never leak from one measurement into the next.

Spec fields: ``measure`` (``train``, ``eval``, ``sample``, ``static`` or ``machine``), ``library``,
``config`` (the shared model description), ``preset`` (extra keyword arguments of the library's
builder), ``runtime`` (see :mod:`benchmarks.options`), ``device`` (``auto``, ``cpu``, ``cuda``),
``seed``, and the sizes of the measurement (``batch``, ``steps``, ``warmup``, ``n``,
``temperature``, ``repeats``).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root (holding benchmarks/ and flowkit/) importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import measurement_main, resolve_device
from benchmarks.meters import max_rss_mib, meters_for
from benchmarks.models import LIBRARIES, build_model, library_version
from benchmarks.options import Runtime, apply_runtime

__all__ = ["MEASUREMENTS", "main", "measure"]

# Timing does not depend on the learning rate, but the numbers must stay finite: Adam's first update
# moves every parameter by about the learning rate, and a freshly initialised deep Glow diverges
# within a few steps at 1e-3 without the warm-up schedule of real training (both libraries do).
LEARNING_RATE = 1e-5
# Sizes of the machine-rate kernels: a Glow-like 1x1 convolution (512 channels, 16x16, batch 64)
# and a square matrix product.
CONV_SHAPE = (64, 512, 16, 16)
MM_SIZE = 2048


def _images(spec: dict[str, Any], batch: int) -> torch.Tensor:
    # Uniform images in [-1/2, 1/2], the range of flowkit's data pipeline, the same for both
    # libraries (their seeds are equal).
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    return torch.rand((batch, *spec["config"]["input_shape"]), generator=generator) - 0.5


def _build(spec: dict[str, Any], device: torch.device) -> Runtime:
    torch.manual_seed(spec["seed"])
    model = build_model(spec["library"], spec["config"], spec.get("preset", {}))
    return apply_runtime(model, spec["library"], device, spec.get("runtime", {}))


def _initialize(runtime: Runtime, x: torch.Tensor) -> None:
    with runtime.context():
        runtime.model.initialize(x)


def _measure_train(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    runtime = _build(spec, device)
    x = runtime.prepare(_images(spec, spec["batch"]))
    _initialize(runtime, x)
    model = runtime.model
    optimizer = torch.optim.Adam(model.module.parameters(), lr=LEARNING_RATE)
    timer, memory = meters_for(device.type)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with runtime.context():
            loss = -model.log_prob(x).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # The peak covers warm-up too: the first step allocates gradients and Adam's moments.
    memory.start()
    for _ in range(spec["warmup"]):
        step()
    seconds, losses = [], []
    for _ in range(spec["steps"]):
        timer.start()
        losses.append(step())
        seconds.append(timer.stop())
    peak = memory.stop()
    total = sum(seconds)
    return {
        "batch": spec["batch"],
        "steps": spec["steps"],
        "warmup": spec["warmup"],
        "seconds": seconds,
        "total_seconds": total,
        "median_step_seconds": statistics.median(seconds),
        "images_per_second": spec["batch"] * spec["steps"] / total,
        "losses": losses,
        "final_loss": losses[-1],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "memory": peak,
    }


def _time_no_grad(
    timer: Any, runtime: Runtime, call: Callable[[], Tensor], warmup: int, repeats: int
) -> tuple[list[float], bool, Tensor]:
    """Time ``repeats`` calls after ``warmup`` untimed ones, without autograd.

    Returns the seconds of the timed calls, whether every output (warm-up included) was finite, and
    the last output.
    """
    seconds: list[float] = []
    finite = True
    with torch.no_grad():
        for index in range(warmup + repeats):
            timer.start()
            with runtime.context():
                output = call()
            elapsed = timer.stop()
            finite = finite and bool(torch.isfinite(output).all())
            if index >= warmup:
                seconds.append(elapsed)
    return seconds, finite, output


def _measure_eval(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    runtime = _build(spec, device)
    x = runtime.prepare(_images(spec, spec["batch"]))
    _initialize(runtime, x)
    timer, memory = meters_for(device.type)
    memory.start()
    seconds, finite, _ = _time_no_grad(
        timer, runtime, lambda: runtime.model.log_prob(x), spec["warmup"], spec["steps"]
    )
    peak = memory.stop()
    total = sum(seconds)
    return {
        "batch": spec["batch"],
        "steps": spec["steps"],
        "warmup": spec["warmup"],
        "seconds": seconds,
        "total_seconds": total,
        "images_per_second": spec["batch"] * spec["steps"] / total,
        "finite": finite,
        "memory": peak,
    }


def _measure_sample(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    runtime = _build(spec, device)
    _initialize(runtime, runtime.prepare(_images(spec, spec["init_batch"])))
    timer, _ = meters_for(device.type)
    seconds, finite, images = _time_no_grad(
        timer,
        runtime,
        lambda: runtime.model.sample(spec["n"], spec["temperature"]),
        spec["warmup"],
        spec["repeats"],
    )
    return {
        "n": spec["n"],
        "temperature": spec["temperature"],
        "repeats": spec["repeats"],
        "warmup": spec["warmup"],
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "finite": finite,
        "shape": list(images.shape),
    }


class _GlobalOnlyTracker:
    """Stands in for FlopCounterMode's module tracker: only the total count is read here.

    The tracker hooks the backward pass of every module, and those hooks raise when a backward pass
    itself calls ``torch.autograd.grad``, as flowkit's memory-saving chains do (torch 2.13).
    """

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnlyTracker:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def _flop_counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnlyTracker()
    return counter


def _measure_static(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    runtime = _build(spec, device)
    batch = spec["batch"]
    x = runtime.prepare(_images(spec, batch))
    _initialize(runtime, x)
    model = runtime.model
    with _flop_counter() as forward_counter, torch.no_grad(), runtime.context():
        model.log_prob(x)
    with _flop_counter() as train_counter:
        with runtime.context():
            loss = -model.log_prob(x).mean()
        loss.backward()
    return {
        "parameters": sum(p.numel() for p in model.module.parameters()),
        "trainable_parameters": sum(
            p.numel() for p in model.module.parameters() if p.requires_grad
        ),
        "flop_batch": batch,
        "forward_flops_per_image": forward_counter.get_total_flops() / batch,
        "train_flops_per_image": train_counter.get_total_flops() / batch,
    }


def _rate(timer: Any, run: Any, flops: float, warmup: int, repeats: int) -> dict[str, Any]:
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        timer.start()
        run()
        seconds.append(timer.stop())
    return {
        "flops_per_call": flops,
        "seconds": seconds,
        "gflops_best": flops / min(seconds) / 1e9,
        "gflops_median": flops / statistics.median(seconds) / 1e9,
    }


def _measure_machine(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    torch.manual_seed(spec["seed"])
    timer, _ = meters_for(device.type)
    batch, channels, height, width = CONV_SHAPE
    x = torch.randn(CONV_SHAPE, device=device)
    weight = torch.randn(channels, channels, 1, 1, device=device)
    a = torch.randn(MM_SIZE, MM_SIZE, device=device)
    b = torch.randn(MM_SIZE, MM_SIZE, device=device)
    with torch.no_grad():
        conv = _rate(
            timer,
            lambda: F.conv2d(x, weight),
            2.0 * batch * channels * channels * height * width,
            spec["warmup"],
            spec["repeats"],
        )
        mm = _rate(timer, lambda: torch.mm(a, b), 2.0 * MM_SIZE**3, spec["warmup"], spec["repeats"])
    return {"conv1x1": {"shape": list(CONV_SHAPE), **conv}, "mm": {"size": MM_SIZE, **mm}}


MEASUREMENTS = {
    "train": _measure_train,
    "eval": _measure_eval,
    "sample": _measure_sample,
    "static": _measure_static,
    "machine": _measure_machine,
}


def _environment(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        "pid": os.getpid(),
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
    environment["libraries"] = {name: library_version(name) for name in LIBRARIES}
    library = spec.get("library")
    if library is not None:
        environment["library_version"] = library_version(library)
    return environment


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the measurement ``spec`` in this process; return its record (``ok``, ``result``)."""
    kind = spec.get("measure")
    if kind not in MEASUREMENTS:
        raise ValueError(f"spec 'measure' must be one of {sorted(MEASUREMENTS)}, got {kind!r}")
    device = resolve_device(spec.get("device", "auto"))
    if device.type == "cuda" and device.index is not None:
        # The meters read the current device's allocator statistics.
        torch.cuda.set_device(device)
    result = MEASUREMENTS[kind](spec, device)
    return {
        "ok": True,
        "spec": spec,
        "environment": _environment(spec, device),
        "max_rss_mib": max_rss_mib(),
        "result": result,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: the spec is the first argument (JSON text, or ``-`` to read it from stdin)."""
    return measurement_main(argv, measure, "benchmarks.measure")


if __name__ == "__main__":
    sys.exit(main())
