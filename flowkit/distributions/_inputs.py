"""Checks on what enters a distribution: sample counts, temperatures, values, dtype and device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._checks import check_float, is_int
from flowkit._tensors import validation_enabled

__all__ = [
    "check_finite",
    "check_matches_module",
    "check_sample_shape",
    "check_temperature",
    "module_dtype_device",
]


def check_finite(name: str, x: Tensor, what: str = "input") -> None:
    """Raise a ValueError if ``x`` holds NaN or infinity (only while validation is enabled).

    Meta tensors carry no values, so they pass (shape inference runs through).
    """
    if not validation_enabled() or x.device.type == "meta":
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"{name} expects a finite {what}, got {bad} non-finite value(s) "
            f"(first at index {first}: {x[first].item()})"
        )


def check_sample_shape(owner: str, n: object) -> torch.Size:
    """``None`` -> ``()``, an int ``n >= 0`` -> ``(n,)``, a sequence of ints ``>= 0`` -> itself.

    Raises:
        TypeError: ``n`` is a float, a bool, or a sequence holding something other than ints.
        ValueError: a count is negative.
    """
    allowed = "an int >= 0, a shape tuple of ints >= 0, or None"
    if n is None:
        return torch.Size()
    if is_int(n):
        if int(n) < 0:
            raise ValueError(f"{owner} expects a number of samples as {allowed}, got {n}")
        return torch.Size((int(n),))
    if isinstance(n, (Sequence, torch.Size)) and not isinstance(n, (str, bytes)):
        entries = tuple(n)
        if not all(is_int(e) for e in entries):
            raise TypeError(f"{owner} expects a number of samples as {allowed}, got {n!r}")
        if any(int(e) < 0 for e in entries):
            raise ValueError(f"{owner} expects a number of samples as {allowed}, got {entries}")
        return torch.Size(int(e) for e in entries)
    raise TypeError(
        f"{owner} expects a number of samples as {allowed}, got {n!r} ({type(n).__name__})"
    )


def check_temperature(owner: str, temperature: object) -> float:
    """Return the sampling temperature as a float; it must be a finite number >= 0."""
    value = check_float(owner, "temperature", temperature, 0.0)
    assert value is not None
    return value


# --- tensors against the module they enter -------------------------------------------------------
def module_dtype_device(module: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """The floating dtype of ``module``'s parameters and the device of its parameters or buffers.

    None where the module has none: a flow without parameters computes in any floating dtype, and
    one without tensors on any device.
    """
    dtype = device = None
    for parameter in module.parameters():
        device = parameter.device
        if parameter.is_floating_point():
            dtype = parameter.dtype
            break
    if device is None:
        for buffer in module.buffers():
            device = buffer.device
            break
    return dtype, device


def check_matches_module(
    owner: str,
    x: Tensor,
    dtype: torch.dtype | None,
    device: torch.device | None,
    what: str = "input",
    model: str = "model",
) -> None:
    """Raise unless floating ``x`` has the module's ``dtype`` and ``x`` sits on its ``device``.

    Raises:
        TypeError: A floating-point dtype other than the module's, naming both and the fix.
        ValueError: Another device than the module's, naming both.
    """
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        raise TypeError(
            f"{owner} expects {what} of dtype {dtype} (the dtype of its parameters), got "
            f"{x.dtype}; convert the {what} ({_cast(dtype)}) or the {model} "
            f"({model}{_cast(x.dtype)[1:]})"
        )
    if device is not None and x.device != device and not _same_device(x.device, device):
        raise ValueError(
            f"{owner} expects {what} on device {device} (where its parameters are), got {what} on "
            f"{x.device}; move one of them (x.to({str(device)!r}) or "
            f"{model}.to({str(x.device)!r}))"
        )


_CASTS = {
    torch.float32: "x.float()",
    torch.float64: "x.double()",
    torch.float16: "x.half()",
    torch.bfloat16: "x.bfloat16()",
}


def _cast(dtype: torch.dtype) -> str:
    return _CASTS.get(dtype, f"x.to({dtype})")


def _same_device(a: torch.device, b: torch.device) -> bool:
    # cuda and cuda:0 name the same device when the index is implied.
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
