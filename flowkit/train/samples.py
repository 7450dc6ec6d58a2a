"""Sample grids: one writer for the trainer's per-epoch grids and for ``flowkit sample``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from flowkit.distributions import Dequantized, Flow

__all__ = ["write_sample_grid"]


@torch.no_grad()
def write_sample_grid(
    model: Flow | Dequantized,
    path: str | os.PathLike,
    *,
    num: int,
    temperature: float,
    context: Tensor | None = None,
    seed: int = 0,
    nrow: int | None = None,
) -> int:
    """Sample ``num`` images at ``temperature`` and save them as one PNG grid.

    The noise is drawn from ``seed`` (torch's global random state is restored afterwards), so the
    grids of successive epochs show the same latents. A young model's inverse can overflow at a
    high temperature: such values are drawn mid-grey and counted, never allowed to stop a run.

    Args:
        model: The image model, a :class:`~flowkit.distributions.Dequantized` (its bits turn
            the flow's samples into pixels); a plain flow over images in ``[-1/2, 1/2]`` counts
            as 8-bit.
        path: The PNG file.
        num: Number of images (ignored when ``context`` gives one row per image).
        temperature: Standard deviation of the base noise.
        context: Class labels (or other context), one per image, for a conditional model.
        seed: Seed of the base noise.
        nrow: Images per row of the grid (default: about square).

    Returns:
        The number of non-finite sample values.
    """
    from flowkit.data import save_image_grid

    model = model if isinstance(model, Dequantized) else Dequantized(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    devices = [device] if device.type == "cuda" else []
    # The flow's continuous samples, so that non-finite values can be counted before they become
    # integers.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if context is None:
            images = model.flow.sample(num, temperature=temperature)
        else:
            images = model.flow.sample(context=context, temperature=temperature)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.float().cpu()
    bad = ~torch.isfinite(images)
    levels = model.quantize(images.masked_fill(bad, 0.0))
    save_image_grid(model.to_uint8(levels), path, nrow=nrow)
    return int(bad.sum())
