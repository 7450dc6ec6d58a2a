"""Tile a batch of uint8 images into one grid image and save it as PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["make_grid", "save_image_grid"]


def make_grid(
    images: Tensor | np.ndarray, *, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile ``N`` images into rows of ``nrow``, separated and framed by ``padding`` pixels.

    Image ``i`` lands in row ``i // n``, column ``i % n`` with ``n = min(nrow, N)`` columns; cells
    of a last, partial row stay at ``pad_value``.

    Args:
        images: uint8 tensor or array of shape ``(N, C, H, W)`` with ``C`` = 1 or 3 (e.g. from
            :func:`flowkit.data.to_uint8`).
        nrow: Images per row; defaults to ``ceil(sqrt(N))``, a near-square grid.
        padding: Pixels between images and around the grid.
        pad_value: Grey level (0 to 255) of the padding.

    Returns:
        uint8 array of shape ``(rows * (H + p) + p, n * (W + p) + p, C)`` with ``p`` the padding
        and ``rows = ceil(N / n)``, in the height-width-channel layout of Pillow and matplotlib.

    Raises:
        TypeError: If the images are not uint8.
        ValueError: If the shape, ``nrow``, ``padding`` or ``pad_value`` is invalid.

    Example:
        >>> make_grid(torch.zeros(5, 3, 8, 8, dtype=torch.uint8)).shape
        (22, 32, 3)
    """
    array = _as_uint8_array("make_grid", images)
    count, channels, height, width = array.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(count))
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"make_grid expects nrow as a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"make_grid expects padding as a non-negative int, got {padding!r}")
    if isinstance(pad_value, bool) or not isinstance(pad_value, int) or not 0 <= pad_value <= 255:
        raise ValueError(f"make_grid expects pad_value as an int in 0..255, got {pad_value!r}")
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    cell_height, cell_width = height + padding, width + padding
    grid = np.full(
        (rows * cell_height + padding, columns * cell_width + padding, channels),
        pad_value,
        dtype=np.uint8,
    )
    for index in range(count):
        top = (index // columns) * cell_height + padding
        left = (index % columns) * cell_width + padding
        grid[top : top + height, left : left + width] = array[index].transpose(1, 2, 0)
    return grid


def save_image_grid(
    images: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: int = 0,
) -> Path:
    """Save a grid of uint8 images (see :func:`make_grid`) as a PNG file.

    Parent folders are created. The file is PNG whatever its name ends with.

    Args:
        images: uint8 tensor or array ``(N, C, H, W)``, ``C`` = 1 (grey) or 3 (RGB).
        path: Where to write.
        nrow: Images per row; defaults to ``ceil(sqrt(N))``.
        padding: Pixels between images and around the grid.
        pad_value: Grey level (0 to 255) of the padding.

    Returns:
        The path written.

    Example (needs the dataset files)::

        model = Dequantized(flow, 5)  # a 5-bit image model owns its bits
        save_image_grid(model.to_uint8(model.sample(64)), "runs/glow/samples.png")
    """
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    picture.save(target, format="PNG")
    return target


def _as_uint8_array(name: str, images: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(
                f"{name} expects uint8 images, got {images.dtype}; convert model outputs with "
                "flowkit.data.to_uint8"
            )
        array = images.detach().cpu().numpy()
    elif isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise TypeError(f"{name} expects uint8 images, got numpy {images.dtype}")
        array = images
    else:
        raise TypeError(f"{name} expects a tensor or numpy array, got {type(images).__name__}")
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
        raise ValueError(
            f"{name} expects images of shape (N, C, H, W) with N >= 1 and C in (1, 3), got "
            f"{tuple(array.shape)}"
        )
    return array
