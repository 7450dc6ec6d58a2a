"""Training-time augmentation of uint8 images: Glow's random shifts and horizontal flips."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["augment_images", "random_flip", "random_shift"]


def _check_images(owner: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, Tensor) else None
        raise ValueError(
            f"{owner} expects uint8 images shaped (N, C, H, W), got {dtype} with shape {shape}"
        )


def _shift_axis(values: Tensor, shift: Tensor, axis: int) -> Tensor:
    """Translate float images along ``axis`` (2 or 3) by ``shift`` pixels each, bilinearly.

    Output pixel ``j`` reads the input at ``j + shift``, edges replicated (``fill_mode="nearest"``).
    """
    size = values.shape[axis]
    whole = torch.floor(shift)
    fraction = (shift - whole).to(values.dtype)
    positions = torch.arange(size, device=values.device)
    source = positions[None, :] + whole[:, None].long()
    low, high = source.clamp(0, size - 1), (source + 1).clamp(0, size - 1)
    view = [values.shape[0], 1, 1, 1]
    view[axis] = size
    expand = list(values.shape)
    low_index = low.view(view).expand(expand)
    high_index = high.view(view).expand(expand)
    weight_shape = [values.shape[0], 1, 1, 1]
    weight = fraction.view(weight_shape)
    return (1 - weight) * values.gather(axis, low_index) + weight * values.gather(axis, high_index)


def random_shift(
    images: Tensor, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    r"""Translate each image by a random sub-pixel offset, as Glow's official data loader does.

    The official CIFAR-10 and MNIST runs (``--dal 1``) feed Keras' ``ImageDataGenerator(
    width_shift_range=0.1, height_shift_range=0.1)``: per image, offsets drawn uniformly from
    :math:`[-0.1 W, 0.1 W]` and :math:`[-0.1 H, 0.1 H]` pixels, bilinear interpolation, edges
    replicated, then floored back to integers. This function does the same in torch.

    Args:
        images: uint8 images ``(N, C, H, W)``.
        fraction: Largest offset as a fraction of the height and width (0.1 officially).
        generator: Random generator of the offsets (CPU), for reproducibility.

    Returns:
        uint8 images of the same shape.

    Example:
        >>> images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> bool(torch.equal(random_shift(images, 0.0), images))
        True
    """
    _check_images("random_shift", images)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"random_shift expects a fraction in [0, 1), got {fraction}")
    count, _, height, width = images.shape
    offsets = (torch.rand(count, 2, generator=generator, dtype=torch.float64) * 2 - 1) * fraction
    offsets = offsets * torch.tensor([height, width], dtype=torch.float64)
    offsets = offsets.to(images.device)
    values = images.float()
    values = _shift_axis(values, offsets[:, 0], 2)
    values = _shift_axis(values, offsets[:, 1], 3)
    # The interpolated values are floored, as the official loader's x_to_uint8 does; a tiny
    # margin keeps exact integers (a zero offset) from rounding down to the next value below.
    return torch.floor(values + 1e-4).clamp(0, 255).to(torch.uint8)


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left to right with probability 1/2.

    Args:
        images: uint8 images ``(N, C, H, W)``.
        generator: Random generator of the coin flips (CPU).

    Returns:
        uint8 images of the same shape.
    """
    _check_images("random_flip", images)
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


def augment_images(
    images: Tensor,
    *,
    shift: float = 0.0,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random shifts (when ``shift > 0``) then random horizontal flips (when ``flip``).

    Draws nothing from ``generator`` for the augmentations that are off, so a run without
    augmentation sees the same random numbers as before augmentation existed.
    """
    if shift > 0:
        images = random_shift(images, shift, generator)
    if flip:
        images = random_flip(images, generator)
    return images
