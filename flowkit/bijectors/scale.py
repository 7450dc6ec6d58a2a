"""Scale functions of affine maps: how a conditioner's raw output becomes a log-scale."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MIN_SOFTPLUS_SCALE", "SCALE_FUNCTIONS", "ScaleFunction", "resolve_scale_fn"]


def _glow_log_scale(h: Tensor) -> Tensor:
    # Glow's scale sigmoid(h + 2): near 0.88 for a zero-initialised network, always in (0, 1).
    return F.logsigmoid(h + 2.0)


def _exp_log_scale(h: Tensor) -> Tensor:
    return h


# The softplus scale never falls below this, so its log (the log-determinant) stays finite however
# negative the network's output gets (nflows adds the same 1e-3).
MIN_SOFTPLUS_SCALE = 1e-3
# softplus(h + shift) + MIN_SOFTPLUS_SCALE is exactly 1 at h = 0: log(e^(1 - 1e-3) - 1).
_SOFTPLUS_SHIFT = math.log(math.expm1(1.0 - MIN_SOFTPLUS_SCALE))


def _softplus_log_scale(h: Tensor) -> Tensor:
    # Unlike exp, the scale grows only linearly in h; it is 1 at h = 0 and at least 1e-3.
    return torch.log(F.softplus(h + _SOFTPLUS_SHIFT) + MIN_SOFTPLUS_SCALE)


SCALE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": _glow_log_scale,
    "exp": _exp_log_scale,
    "softplus": _softplus_log_scale,
}
"""Named maps from the conditioner's raw scale output to the log of the scale."""

ScaleFunction = Union[str, Callable[[Tensor], Tensor]]


def resolve_scale_fn(scale_fn: ScaleFunction, owner: str) -> tuple[str, Callable[[Tensor], Tensor]]:
    """Look up a named scale function (or accept a callable); return ``(name, function)``.

    Args:
        scale_fn: A name in :data:`SCALE_FUNCTIONS` or a callable :math:`h \\mapsto \\log s`
            (a module, such as :class:`flowkit.nn.ScaledTanh`, brings its parameters along).
        owner: Name of the caller, for the error message.

    Raises:
        ValueError: Naming ``owner`` and the known names, if ``scale_fn`` is an unknown name.
        TypeError: If ``scale_fn`` is neither a name nor a callable.

    Example:
        >>> name, log_scale = resolve_scale_fn("exp", "AffineMap")
        >>> name, float(log_scale(torch.tensor(0.5)))
        ('exp', 0.5)
    """
    if isinstance(scale_fn, str):
        if scale_fn not in SCALE_FUNCTIONS:
            raise ValueError(
                f"{owner} expects scale_fn in {sorted(SCALE_FUNCTIONS)} or a callable, "
                f"got {scale_fn!r}"
            )
        return scale_fn, SCALE_FUNCTIONS[scale_fn]
    if not callable(scale_fn):
        raise TypeError(f"{owner} expects scale_fn as a name or a callable, got {scale_fn!r}")
    return getattr(scale_fn, "__name__", "custom"), scale_fn
