"""Mixed precision: the flow's own maps stay in their input's dtype under ``torch.autocast``.

A model trained under autocast (``TrainConfig(precision="bfloat16")``) runs its networks in half
precision. The flow stream must not follow: a 1x1 convolution or a dense linear map of the data
computed in bfloat16 would round every latent to three significant digits, and a log-determinant
summed in bfloat16 loses whole nats. Two rules keep the flow exact to its working dtype:

* a conditioner's output is cast back to the input's dtype before the map uses it
  (:func:`as_dtype_of`, applied where bijectors call their networks), so the map's arithmetic,
  its log-determinant and everything after it are float32 again;
* a bijector whose map is itself a matrix product of the data (invertible convolutions, dense
  linear maps) runs it with autocast off (:func:`outside_autocast`).

Bijectors written by users follow the same two rules; ``flowkit.testing.check_bijector`` is run
under autocast by the test suite for every bijector flowkit ships.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["as_dtype_of", "autocast_enabled", "outside_autocast"]

# The device types torch.autocast accepts on every supported torch version.
_AUTOCAST_DEVICES = ("cpu", "cuda")

_Method = TypeVar("_Method", bound=Callable[..., Any])


def autocast_enabled(device_type: str) -> bool:
    """Whether ``torch.autocast`` is on for ``device_type`` here."""
    if device_type not in _AUTOCAST_DEVICES:
        return False
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4 takes no device type
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def full_precision(x: Tensor) -> AbstractContextManager[Any]:
    """A context that turns autocast off on ``x``'s device while it is on (else a no-op)."""
    device_type = x.device.type
    if autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def outside_autocast(method: _Method) -> _Method:
    """Run a bijector's ``forward``/``inverse(x, context=None)`` with autocast off.

    For maps that multiply the data by a matrix: under autocast the product would be computed,
    and returned, in half precision. The weights are float32 parameters and ``x`` is the flow's
    float32 stream, so with autocast off the map is computed exactly as without it.
    """

    @functools.wraps(method)
    def wrapper(self: Any, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        with full_precision(x):
            return method(self, x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def as_dtype_of(value: Tensor, x: Tensor) -> Tensor:
    """``value`` in ``x``'s dtype: a network's output, computed under autocast, back in the flow's.

    A no-op (no copy) when the dtypes already agree, as they do without autocast.
    """
    return value if value.dtype == x.dtype else value.to(x.dtype)
