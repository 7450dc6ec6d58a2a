"""Constructors of the dense linear and batch-normalisation bijectors, for the shared registry.

Each entry is ``(id, constructor, event_shape, context_shape)``: ``constructor()`` takes no
argument and returns a bijector ready for :func:`flowkit.testing.check_bijector` at that event
shape (``context_shape`` is None: none of these is conditional).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowkit.bijectors import (
    BatchNorm,
    Bijector,
    HouseholderLinear,
    LULinear,
    QRLinear,
    SVDLinear,
)

__all__ = ["ENTRIES", "trained_batch_norm"]


def trained_batch_norm(channels: int, *, event_rank: int = 1, seed: int = 0) -> BatchNorm:
    """A BatchNorm in evaluation mode whose running statistics moved away from (0, 1).

    check_bijector's batch-independence check holds only in evaluation mode; a few training-mode
    passes over shifted, scaled batches make the running mean and variance non-trivial first.
    """
    generator = torch.Generator().manual_seed(seed)
    norm = BatchNorm(channels, event_rank=event_rank, momentum=0.5)
    spatial = (3, 3) if event_rank == 3 else ()
    shape = (channels,) + spatial
    scale = torch.rand(shape[:1] + (1,) * len(spatial), generator=generator) * 3 + 0.5
    shift = torch.randn(shape[:1] + (1,) * len(spatial), generator=generator) * 2
    for _ in range(4):
        norm(torch.randn((16,) + shape, generator=generator) * scale + shift)
    return norm.eval()


ENTRIES: list[tuple[str, Callable[[], Bijector], tuple[int, ...], tuple[int, ...] | None]] = [
    ("LULinear", lambda: LULinear(5, seed=0), (5,), None),
    ("LULinear-identity-nobias", lambda: LULinear(4, identity_init=True, bias=False), (4,), None),
    ("HouseholderLinear", lambda: HouseholderLinear(5, seed=0), (5,), None),
    ("HouseholderLinear-2", lambda: HouseholderLinear(6, 2, seed=1), (6,), None),
    ("QRLinear", lambda: QRLinear(5, seed=0), (5,), None),
    ("SVDLinear", lambda: SVDLinear(5, seed=0), (5,), None),
    ("BatchNorm-vector-eval", lambda: trained_batch_norm(4), (4,), None),
    ("BatchNorm-image-eval", lambda: trained_batch_norm(3, event_rank=3), (3, 4, 4), None),
]
