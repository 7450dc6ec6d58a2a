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
        min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False,
        width=64 if np_dtype == np.float64 else 32,
    )
    return hnp.arrays(np_dtype, tuple(shape), elements=elements).map(torch.from_numpy)
