"""What the preset builders share: the parameter-count guard and seeded construction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

__all__ = ["MAX_PARAMETERS", "build_seeded", "check_parameter_count", "mlp_parameter_count"]

# A model past this many parameters needs more than 8 GB in float32 before any activation: a config
# that asks for it is a typo (or a corrupt checkpoint), caught before anything is allocated.
MAX_PARAMETERS = 2**31


def check_parameter_count(owner: str, count: int, detail: str, limit: int = MAX_PARAMETERS) -> None:
    """Raise a ValueError if a model would have more than ``limit`` parameters.

    ``detail`` names the values that set the count, e.g. ``"K=64, hidden_channels=4096"``.
    """
    if count > limit:
        raise ValueError(
            f"{owner} with {detail} would have about {count:.3g} parameters, more than the limit "
            f"of {limit:.3g} ({limit * 4 / 2**30:.0f} GiB in float32); reduce these values"
        )


def mlp_parameter_count(inputs: int, widths: Sequence[int], outputs: int) -> int:
    """Weights and biases of a fully connected network ``inputs -> *widths -> outputs``."""
    sizes = (inputs, *widths, outputs)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


_Built = TypeVar("_Built")


def build_seeded(seed: int | None, build: Callable[[torch.Generator | None], _Built]) -> _Built:
    """``build(generator)`` with every initial weight drawn from ``seed``; ``build(None)`` without.

    With a seed, torch's global random state is seeded for the construction and restored after it,
    and ``build`` gets a generator of its own seeded likewise (for draws it makes explicitly), so
    the same seed gives the same model whatever the caller's random state.
    """
    if seed is None:
        return build(None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(torch.Generator().manual_seed(seed))
