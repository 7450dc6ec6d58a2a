"""The public hypothesis strategies draw what they promise."""

from __future__ import annotations

import torch
from hypothesis import given

from flowkit.testing.strategies import (
    batch_shapes,
    image_shapes,
    scales,
    seeds,
    st,
    tensors,
    vector_shapes,
)


@given(shape=image_shapes(min_size=3, max_size=9, multiple_of=4))
def test_image_shapes(shape) -> None:
    channels, height, width = shape
    assert channels in (2, 4, 6, 8)
    assert all(side % 4 == 0 and 4 <= side <= 8 for side in (height, width))


@given(shape=image_shapes(st.just(3), min_size=1, max_size=3, multiple_of=1))
def test_image_shapes_with_given_channels(shape) -> None:
    assert shape[0] == 3 and 1 <= shape[1] <= 3


@given(vector=vector_shapes(3, 5), batch=batch_shapes(max_rank=3, max_size=2))
def test_vector_and_batch_shapes(vector, batch) -> None:
    assert len(vector) == 1 and 3 <= vector[0] <= 5
    assert 1 <= len(batch) <= 3 and all(1 <= size <= 2 for size in batch)


@given(seed=seeds(), scale=scales(0.5, 2.0))
def test_seeds_and_scales(seed: int, scale: float) -> None:
    torch.Generator().manual_seed(seed)
    assert 0.5 <= scale <= 2.0


@given(x64=tensors((2, 3)), x32=tensors((4,), dtype=torch.float32, min_value=-1.0, max_value=1.0))
def test_tensors(x64: torch.Tensor, x32: torch.Tensor) -> None:
    assert x64.shape == (2, 3) and x64.dtype == torch.float64
    assert bool(torch.isfinite(x64).all()) and float(x64.abs().max()) <= 4.0
    assert x32.dtype == torch.float32 and float(x32.abs().max()) <= 1.0
