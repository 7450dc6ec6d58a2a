"""Glow's preprocessing: n-bit reduction, scaling to [-0.5, 0.5), dequantization, and back."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = ["n_bins", "reduce_bits", "to_model_input", "to_uint8"]

# Dequantization noise is drawn as integers on a grid of 2**-24, the resolution of float32 in
# [0.5, 1): every value of (x + 0.5) is then exact in float32, so floor((x + 0.5) * n_bins) gives
# back the bin even for noise just below one bin width, where float rounding could otherwise
# reach the next bin (or 0.5 itself).
_NOISE_BITS = 24


def n_bins(n_bits: int) -> int:
    r"""Number of intensity levels :math:`2^{n}` kept by ``n_bits`` bits.

    Args:
        n_bits: Bits per channel, 1 to 8.

    Example:
        >>> n_bins(5)
        32
    """
    _check_bits("n_bins", n_bits)
    return 2 ** int(n_bits)


def reduce_bits(images: Tensor, n_bits: int) -> Tensor:
    r"""Keep the ``n_bits`` most significant bits: :math:`\lfloor x / 2^{8 - n} \rfloor`.

    Args:
        images: uint8 tensor of any shape.
        n_bits: Bits to keep, 1 to 8 (8 is the identity).

    Returns:
        uint8 tensor of the same shape with values in ``[0, 2**n_bits)``.

    References:
        Kingma & Dhariwal, Glow (2018), official code's ``preprocess``.

    Example:
        >>> reduce_bits(torch.tensor([0, 7, 8, 255], dtype=torch.uint8), 5)
        tensor([ 0,  0,  1, 31], dtype=torch.uint8)
    """
    _check_uint8("reduce_bits", images)
    _check_bits("reduce_bits", n_bits)
    return images >> (8 - int(n_bits))


def to_model_input(
    images: Tensor,
    n_bits: int = 8,
    *,
    dequantize: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Map uint8 images to the model's continuous input in :math:`[-0.5, 0.5)`.

    With :math:`k = \lfloor x / 2^{8-n} \rfloor` the reduced integer and :math:`B = 2^n` bins,

    .. math:: y = k / B - 1/2 + u, \qquad u \sim \mathcal{U}(0, 1/B),

    as in Glow's official code; ``dequantize=False`` leaves out :math:`u`, giving each bin's
    lower edge. The noise is uniform on a grid of :math:`2^{-24}`
    (float32's own resolution near 1), which keeps :math:`\lfloor (y + 1/2) B \rfloor = k` exact.

    Args:
        images: uint8 tensor of any shape, e.g. ``(N, C, H, W)``.
        n_bits: Bits per channel kept, 1 to 8.
        dequantize: Add uniform noise of one bin width.
        generator: Random generator for the noise (on the images' device), for reproducibility.

    Returns:
        float32 tensor of the same shape and device, values in ``[-0.5, 0.5)``.

    References:
        Kingma & Dhariwal, Glow (2018); Theis, van den Oord & Bethge, A note on the evaluation of
        generative models (2016), for dequantization.

    Example:
        >>> x = torch.tensor([0, 128, 255], dtype=torch.uint8)
        >>> to_model_input(x, dequantize=False)
        tensor([-0.5000,  0.0000,  0.4961])
    """
    _check_uint8("to_model_input", images)
    _check_bits("to_model_input", n_bits)
    n_bits = int(n_bits)
    reduced = reduce_bits(images, n_bits)
    if not dequantize:
        return reduced.to(torch.float32) / 2**n_bits - 0.5
    shift = _NOISE_BITS - n_bits
    grid = torch.randint(
        0, 2**shift, images.shape, generator=generator, dtype=torch.int32, device=images.device
    )
    # k * 2**shift + j < 2**24 is an exact float32 integer; scaling by 2**-24 and subtracting 0.5
    # are exact too, so the result lies in k's bin exactly.
    grid.add_(reduced.to(torch.int32).bitwise_left_shift_(shift))
    return grid.to(torch.float32).mul_(2.0**-_NOISE_BITS).sub_(0.5)


def to_uint8(x: Tensor, n_bits: int = 8) -> Tensor:
    r"""Map model-space values back to uint8 images (Glow's ``postprocess``).

    .. math:: \mathrm{clip}\big(\lfloor (x + 1/2) B \rfloor \cdot 256 / B,\ 0,\ 255\big)

    with :math:`B = 2^n`; values outside :math:`[-0.5, 0.5)` (samples) are clipped. The result
    for an input from :func:`to_model_input` is ``reduce_bits(images) * 256 / B``.

    Args:
        x: Floating-point tensor of any shape.
        n_bits: Bits per channel the model was trained with, 1 to 8.

    Returns:
        uint8 tensor of the same shape.

    Raises:
        ValueError: If ``x`` holds NaN (a diverged model), which has no pixel value.

    References:
        Kingma & Dhariwal, Glow (2018), official code's ``postprocess``.

    Example:
        >>> to_uint8(torch.tensor([-0.5, 0.0, 0.49, 3.0]), n_bits=5)
        tensor([  0, 128, 248, 255], dtype=torch.uint8)
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"to_uint8 expects a floating-point tensor, got {got}")
    _check_bits("to_uint8", n_bits)
    nan = torch.isnan(x)
    if bool(nan.any()):
        raise ValueError(
            f"to_uint8 expects values without NaN, got {int(nan.sum())} NaN value(s) of {x.numel()}"
        )
    bins = 2 ** int(n_bits)
    levels = torch.floor((x + 0.5) * bins) * (256 / bins)
    return levels.clamp(0, 255).to(torch.uint8)


def _check_bits(name: str, n_bits: int) -> None:
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral) or not 1 <= n_bits <= 8:
        raise ValueError(f"{name} expects n_bits as an int in 1..8, got {n_bits!r}")


def _check_uint8(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(
            f"{name} expects a torch.Tensor of dtype uint8, got {type(images).__name__}"
        )
    if images.dtype != torch.uint8:
        raise TypeError(
            f"{name} expects images of dtype torch.uint8 (as stored), got {images.dtype}"
        )
