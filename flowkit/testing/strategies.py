"""Hypothesis strategies for testing bijectors: shapes, seeds, scales and tensors.

Example:
    >>> from hypothesis import given
    >>> from flowkit.bijectors import ActNorm
    >>> from flowkit.testing import check_bijector
    >>> @given(shape=image_shapes(channels=st.just(4)), seed=seeds())
    ... def test_actnorm(shape, seed):
    ...     check_bijector(ActNorm(shape[0]), shape, seed=seed)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "batch_shapes",
    "image_shapes",
    "scales",
    "seeds",
    "spline_knot_inputs",
    "st",
    "tensors",
    "vector_shapes",
]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``check_bijector``'s input draw and parameter perturbation."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def scales(min_value: float = 0.1, max_value: float = 3.0) -> st.SearchStrategy[float]:
    """Positive scales, e.g. for ``input_scale`` or ``perturb``."""
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False)


def batch_shapes(max_rank: int = 2, max_size: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Batch shapes with 1 to ``max_rank`` dimensions of size 1 to ``max_size``."""
    return st.lists(st.integers(1, max_size), min_size=1, max_size=max_rank).map(tuple)


def vector_shapes(min_features: int = 2, max_features: int = 8) -> st.SearchStrategy[tuple[int]]:
    """Event shapes ``(D,)`` of vectors."""
    return st.integers(min_features, max_features).map(lambda d: (d,))


def image_shapes(
    channels: st.SearchStrategy[int] | None = None,
    *,
    min_size: int = 2,
    max_size: int = 6,
    multiple_of: int = 2,
) -> st.SearchStrategy[tuple[int, int, int]]:
    """Event shapes ``(C, H, W)``; height and width are multiples of ``multiple_of``.

    Args:
        channels: Strategy for ``C`` (even numbers from 2 to 8 by default).
        min_size: Smallest height and width.
        max_size: Largest height and width.
        multiple_of: ``H`` and ``W`` are multiples of this (2 for one Squeeze, 4 for two).
    """
    channels = channels if channels is not None else st.sampled_from([2, 4, 6, 8])
    low = max(1, -(-min_size // multiple_of))
    high = max(low, max_size // multiple_of)
    side = st.integers(low, high).map(lambda k: k * multiple_of)
    return st.tuples(channels, side, side)


def tensors(
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    min_value: float = -4.0,
    max_value: float = 4.0,
) -> st.SearchStrategy[torch.Tensor]:
    """Tensors of a fixed shape with finite entries in ``[min_value, max_value]``.

    Hypothesis shrinks towards simple values (zeros, small integers), which exercises edge cases
    such as exact zeros that random draws miss.
    """
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    elements = st.floats(
        min_value=min_value,
        max_value=max_value,
        allow_nan=False,
        allow_infinity=False,
        width=64 if np_dtype == np.float64 else 32,
    )
    return hnp.arrays(np_dtype, tuple(shape), elements=elements).map(torch.from_numpy)


_SPLINE_PROBES = ("knot", "near_knot", "tail", "inside")


def spline_knot_inputs(
    knots: torch.Tensor,
    shape: Sequence[int],
    *,
    max_ulps: int = 4,
    tail_width: float = 2.0,
) -> st.SearchStrategy[torch.Tensor]:
    r"""Inputs that probe a spline where it is fragile: on and next to its knots, and in its tails.

    Each entry is independently one of: a knot exactly (the ends ``-B`` and ``B`` included); a knot
    moved by 1 to ``max_ulps`` units in the last place either way (``torch.nextafter``), so values
    straddle every bin edge and the interval's ends; a tail value :math:`\pm(B + u)` with
    :math:`0 \le u \le` ``tail_width`` :math:`\cdot B`; or a value inside :math:`[-B, B]`.

    Args:
        knots: Knot positions of shape ``(K + 1,)`` (shared by every entry) or
            ``(*shape, K + 1)`` (one row per entry), increasing from ``-B`` to ``B``; their dtype
            is that of the draw. Use the ``y`` knots to probe an inverse.
        shape: Shape of the drawn tensor.
        max_ulps: Largest distance, in units in the last place, of a value next to a knot.
        tail_width: Tail values reach ``B * (1 + tail_width)``.

    Example:
        >>> from hypothesis import given
        >>> from flowkit.bijectors import RationalQuadraticSpline
        >>> from flowkit.testing import check_bijector
        >>> spline = RationalQuadraticSpline(bins=4).double()
        >>> @given(x=spline_knot_inputs(spline.knots().x.detach(), (3, 2)))
        ... def test_spline_edges(x):
        ...     check_bijector(spline, (2,), x=x, perturb=0.0)
    """
    knots = torch.as_tensor(knots)
    if not knots.is_floating_point() or knots.dim() < 1 or knots.shape[-1] < 2:
        raise ValueError(
            f"spline_knot_inputs expects floating knots of shape (K + 1,) with K >= 1, "
            f"got dtype {knots.dtype} and shape {tuple(knots.shape)}"
        )
    shape = tuple(int(s) for s in shape)
    try:
        rows = knots.detach().expand(shape + knots.shape[-1:]).reshape(-1, knots.shape[-1])
    except RuntimeError:
        raise ValueError(
            f"spline_knot_inputs: knots of shape {tuple(knots.shape)} do not broadcast to "
            f"{shape} + (K + 1,)"
        ) from None
    count, last = math.prod(shape), knots.shape[-1] - 1
    probe = st.tuples(
        st.sampled_from(_SPLINE_PROBES),
        st.integers(0, last),
        st.integers(1, max_ulps),
        st.booleans(),
        st.floats(0.0, 1.0),
    )

    def build(probes: list[tuple[str, int, int, bool, float]]) -> torch.Tensor:
        values = []
        for row, (kind, index, ulps, upward, fraction) in zip(rows, probes):
            bound = float(row[-1])
            if kind == "knot":
                value = row[index]
            elif kind == "near_knot":
                value = row[index]
                target = torch.full_like(value, math.inf if upward else -math.inf)
                for _ in range(ulps):
                    value = torch.nextafter(value, target)
            elif kind == "tail":
                magnitude = bound * (1.0 + tail_width * fraction)
                value = row.new_tensor(magnitude if upward else -magnitude)
            else:
                value = row.new_tensor(bound * (2.0 * fraction - 1.0))
            values.append(value)
        return torch.stack(values).reshape(shape) if values else rows.new_zeros(shape)

    return st.lists(probe, min_size=count, max_size=count).map(build)
