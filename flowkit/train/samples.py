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
    flow: Flow | Dequantized,
    path: str | os.PathLike,
    *,
    num: int,
    temperature: float,
    n_bits: int,
    context: Tensor | None = None,
    seed: int = 0,
    nrow: int | None = None,
) -> int:
    """Sample ``num`` images at ``temperature`` and save them as one PNG grid.

    The noise is drawn from ``seed`` (torch's global random state is restored afterwards), so the
    grids of successive epochs show the same latents. A young model's inverse can overflow at a
    high temperature: such values are drawn mid-grey and counted, never allowed to stop a run.

    Args:
        flow: The model: a flow over images in ``[-1/2, 1/2]`` or a
            :class:`~flowkit.distributions.Dequantized` one, whose samples are integers.
        path: The PNG file.
        num: Number of images (ignored when ``context`` gives one row per image).
        temperature: Standard deviation of the base noise.
        n_bits: Bits per pixel of the data the model was trained on.
        context: Class labels (or other context), one per image, for a conditional model.
        seed: Seed of the base noise.
        nrow: Images per row of the grid (default: about square).

    Returns:
        The number of non-finite sample values.
    """
    from flowkit.data import save_image_grid, to_uint8

    device = next((p.device for p in flow.parameters()), torch.device("cpu"))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if context is None:
            images = flow.sample(num, temperature=temperature)
        else:
            images = flow.sample(context=context, temperature=temperature)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not images.is_floating_point():
        # Integer levels of n_bits each, spread over 0..255 as to_uint8 spreads bins.
        save_image_grid((images.cpu() * 2 ** (8 - n_bits)).to(torch.uint8), path, nrow=nrow)
        return 0
    images = images.float().cpu()
    bad = ~torch.isfinite(images)
    save_image_grid(to_uint8(images.masked_fill(bad, 0.0), n_bits), path, nrow=nrow)
    return int(bad.sum())
