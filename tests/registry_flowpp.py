"""Constructors of Flow++'s parts, for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape[, case options])``:
``constructor()`` takes no argument and returns a bijector ready for
:func:`flowkit.testing.check_bijector` at that event shape, with a context of event shape
``context_shape`` for the conditional ones.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from flowkit.bijectors import (
    ActNorm,
    ChannelSplit,
    CheckerboardSplit,
    Coupling,
    InvertibleConv1x1,
    LogisticMixtureCDF,
    LogisticToNormal,
    SplitApply,
    Squeeze,
    SwapHalves,
    channel_mask,
)
from flowkit.nn import ConvAttn

__all__ = ["ENTRIES", "mixture_coupling"]

# Mixture components of the test couplings; each element then has 3K + 2 parameters.
COMPONENTS = 2
# A normalisation per position initialises from the batch alone: two examples at least.
PER_POSITION = {"batch_shapes": st.lists(st.integers(2, 3), min_size=1, max_size=2).map(tuple)}


def mixture_coupling(
    channels: int, height: int, width: int, *, context: int = 0, mode: str = "blocks"
) -> Coupling:
    """A Flow++ coupling on whole columns: a small ConvAttn and the tanh-bounded mixture map."""
    network = ConvAttn(
        channels,
        (3 * COMPONENTS + 2) * channels,
        filters=4,
        blocks=1,
        heads=2,
        context_channels=context,
        context_mode=mode,
        spatial_shape=(height, width // 2),
    )
    split = CheckerboardSplit(height, width, alternate=False)
    return Coupling(network, split, LogisticMixtureCDF(COMPONENTS))


def _halves_step(channels: int, height: int, width: int) -> SplitApply:
    split = CheckerboardSplit(height, width, flip=True, alternate=False)
    return SplitApply(
        split,
        InvertibleConv1x1(channels, lu=False, seed=0),
        InvertibleConv1x1(channels, lu=False, seed=1),
    )


ENTRIES: list[tuple[Any, ...]] = [
    ("logistic-to-normal", lambda: LogisticToNormal(event_rank=3), (2, 3, 2), None),
    ("squeeze-position-major", lambda: Squeeze(order="position_major"), (3, 4, 6), None),
    (
        "actnorm-per-position",
        lambda: ActNorm(2, spatial_shape=(3, 4)),
        (2, 3, 4),
        None,
        PER_POSITION,
    ),
    ("split-apply-columns-conv1x1", lambda: _halves_step(2, 2, 4), (2, 2, 4), None),
    (
        "split-apply-channels-actnorm",
        lambda: SplitApply(
            ChannelSplit(channel_mask(4)),
            ActNorm(2, spatial_shape=(2, 2)),
            InvertibleConv1x1(2, lu=False, seed=2),
        ),
        (4, 2, 2),
        None,
        PER_POSITION,
    ),
    (
        "swap-halves-columns",
        lambda: SwapHalves(CheckerboardSplit(2, 4, alternate=False)),
        (2, 2, 4),
        None,
    ),
    ("swap-halves-channels", lambda: SwapHalves(ChannelSplit(channel_mask(4))), (4, 2, 2), None),
    ("flowpp-coupling-columns", lambda: mixture_coupling(2, 2, 4), (2, 2, 4), None),
    (
        "flowpp-coupling-context-in-blocks",
        lambda: mixture_coupling(1, 2, 4, context=3),
        (1, 2, 4),
        (3, 2, 2),
    ),
    (
        "flowpp-coupling-context-at-input",
        lambda: mixture_coupling(1, 2, 4, context=3, mode="input"),
        (1, 2, 4),
        (3, 2, 2),
    ),
]
