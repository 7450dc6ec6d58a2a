"""Timers and memory meters for one device, chosen together by :func:`meters_for`.

A measurement talks only to a :class:`Timer` and a :class:`MemoryMeter`, so the CPU and the CUDA
code paths run the same measurement loop. On the CPU, time is wall-clock ``perf_counter`` and memory
is the resident set size of the process; on CUDA, time comes from CUDA events and memory from the
caching allocator's ``max_memory_allocated`` (the host RSS is reported beside it).

The CUDA classes take the ``torch.cuda`` module as an argument, so a test can drive them with a
stand-in on a machine without a GPU.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any, Protocol

__all__ = [
    "CpuMemoryMeter",
    "CpuTimer",
    "CudaMemoryMeter",
    "CudaTimer",
    "MemoryMeter",
    "Timer",
    "max_rss_mib",
    "meters_for",
    "rss_mib",
]

MIB = 2**20

# Sampling period of the fallback RSS sampler; short enough to catch the peak of a training step
# (which lasts tens of milliseconds at least) while costing well under 1% of one core.
SAMPLE_PERIOD_S = 0.002


class Timer(Protocol):
    """Measures the duration of a stretch of work on one device."""

    def start(self) -> None:
        """Mark the beginning of the work."""

    def stop(self) -> float:
        """Mark the end of the work (waiting for it to finish); return its duration in seconds."""


class MemoryMeter(Protocol):
    """Measures the peak memory of a stretch of work on one device."""

    def start(self) -> None:
        """Forget earlier peaks and record the memory in use now as the baseline."""

    def stop(self) -> dict[str, Any]:
        """Return ``peak_mib``, ``baseline_mib`` and ``method`` (how the peak was measured)."""


def _status_field(name: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process in MiB (None where /proc is unavailable)."""
    return _status_field("VmRSS")


def max_rss_mib() -> float:
    """Peak resident set size of this process over its whole life (``ru_maxrss``), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), which turns the
    # kernel's own exact high-water mark into a peak over any chosen stretch of work.
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_field("VmHWM") is not None


class CpuTimer:
    """Wall-clock timer (``time.perf_counter``)."""

    def __init__(self) -> None:
        self._began: float | None = None

    def start(self) -> None:
        self._began = time.perf_counter()

    def stop(self) -> float:
        if self._began is None:
            raise RuntimeError("CpuTimer.stop() called before start()")
        elapsed = time.perf_counter() - self._began
        self._began = None
        return elapsed


class CpuMemoryMeter:
    """Peak resident set size over a stretch of work.

    Uses the kernel's high-water mark ``VmHWM`` after resetting it (method ``"vmhwm"``); where that
    reset is refused, samples ``VmRSS`` from a background thread (``"sampled"``); without /proc it
    can only report the process's lifetime peak ``ru_maxrss`` (``"ru_maxrss"``).
    """

    def __init__(self, *, allow_reset: bool = True) -> None:
        self._allow_reset = allow_reset
        self._method: str | None = None
        self._baseline: float | None = None
        self._samples: list[float] = []
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while self._running.is_set():
            value = rss_mib()
            if value is not None:
                self._samples.append(value)
            time.sleep(SAMPLE_PERIOD_S)

    def start(self) -> None:
        self._baseline = rss_mib()
        if self._allow_reset and _reset_peak_rss():
            self._method = "vmhwm"
        elif self._baseline is not None:
            self._method = "sampled"
            self._samples = [self._baseline]
            self._running.set()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._method = "ru_maxrss"

    def stop(self) -> dict[str, Any]:
        if self._method is None:
            raise RuntimeError("CpuMemoryMeter.stop() called before start()")
        if self._method == "vmhwm":
            peak = _status_field("VmHWM")
        elif self._method == "sampled":
            self._running.clear()
            assert self._thread is not None
            self._thread.join()
            now = rss_mib()
            peak = max(self._samples + ([now] if now is not None else []))
        else:
            peak = max_rss_mib()
        result = {"peak_mib": peak, "baseline_mib": self._baseline, "method": self._method}
        self._method = None
        return result


class CudaTimer:
    """Timer from a pair of CUDA events; ``stop`` waits for the work queued before it."""

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda
        self._begin: Any = None

    def start(self) -> None:
        self._begin = self._cuda.Event(enable_timing=True)
        self._begin.record()

    def stop(self) -> float:
        if self._begin is None:
            raise RuntimeError("CudaTimer.stop() called before start()")
        end = self._cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        elapsed_ms = self._begin.elapsed_time(end)
        self._begin = None
        return elapsed_ms / 1000.0


class CudaMemoryMeter:
    """Peak of the CUDA caching allocator's allocated bytes, with the host RSS peak beside it."""

    def __init__(self, cuda: Any, *, host: MemoryMeter | None = None) -> None:
        self._cuda = cuda
        self._host = host if host is not None else CpuMemoryMeter()
        self._baseline: float | None = None

    def start(self) -> None:
        self._cuda.synchronize()
        self._cuda.reset_peak_memory_stats()
        self._baseline = self._cuda.memory_allocated() / MIB
        self._host.start()

    def stop(self) -> dict[str, Any]:
        if self._baseline is None:
            raise RuntimeError("CudaMemoryMeter.stop() called before start()")
        self._cuda.synchronize()
        host = self._host.stop()
        result = {
            "peak_mib": self._cuda.max_memory_allocated() / MIB,
            "baseline_mib": self._baseline,
            "method": "cuda.max_memory_allocated",
            "host_peak_mib": host["peak_mib"],
            "host_baseline_mib": host["baseline_mib"],
            "host_method": host["method"],
        }
        self._baseline = None
        return result


def meters_for(device: str, *, cuda: Any = None) -> tuple[Timer, MemoryMeter]:
    """The timer and memory meter for ``device`` (``"cpu"`` or ``"cuda"``/``"cuda:N"``).

    Args:
        device: The device the measured work runs on.
        cuda: The ``torch.cuda`` module, or a stand-in with the same functions; imported when None.
    """
    if device == "cpu":
        return CpuTimer(), CpuMemoryMeter()
    if device.startswith("cuda"):
        if cuda is None:
            import torch

            cuda = torch.cuda
        return CudaTimer(cuda), CudaMemoryMeter(cuda)
    raise ValueError(f"meters_for expects device 'cpu' or 'cuda[:N]', got {device!r}")
