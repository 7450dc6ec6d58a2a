"""Volume-preserving rearrangements: Squeeze (space-to-depth), Patchify, Reshape, Flatten."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit._tensors import check_event_shape
from flowkit.bijectors.base import Bijector, Shape

__all__ = ["SQUEEZE_ORDERS", "Flatten", "Patchify", "Reshape", "Squeeze"]

# The channel layouts of a squeeze: PyTorch's pixel_unshuffle (and Glow's official squeeze2d)
# put the input channel first; TensorFlow's space_to_depth puts the patch offset first.
SQUEEZE_ORDERS = ("channel_major", "position_major")


class Squeeze(Bijector):
    r"""Space-to-depth: each ``factor x factor`` patch becomes ``factor**2`` channels.

    ``(C, H, W) -> (C * f^2, H / f, W / f)``. With ``order="channel_major"`` (the default) this is
    exactly ``torch.nn.functional.pixel_unshuffle``: output channel ``c * f^2 + i * f + j`` holds
    input channel ``c`` at offset ``(i, j)`` of each patch, which is also the layout of Glow's
    official ``squeeze2d``; the inverse is ``pixel_shuffle``. With ``order="position_major"``
    output channel ``(i * f + j) * C + c`` holds it instead: the layout of TensorFlow's
    ``space_to_depth`` (and of Flow++'s official code, which squeezes with it).
    :math:`\log|\det J| = 0`.

    Args:
        factor: Patch size ``f``; ``H`` and ``W`` must be divisible by it.
        order: ``"channel_major"`` or ``"position_major"``, the channel layout above.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), 3.6.

    Example:
        >>> Squeeze()(torch.randn(5, 3, 32, 32))[0].shape
        torch.Size([5, 12, 16, 16])
    """

    event_rank = 3

    def __init__(self, factor: int = 2, *, order: str = "channel_major") -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"Squeeze expects factor >= 1, got {factor}")
        if order not in SQUEEZE_ORDERS:
            raise ValueError(f"Squeeze expects order in {SQUEEZE_ORDERS}, got {order!r}")
        self.factor = int(factor)
        self.order = order

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Move each patch into channels; the log-determinant is zero."""
        self.forward_shape(x.shape)
        z = _pixel_op(F.pixel_unshuffle, x, self.factor)
        if self.order == "position_major":
            z = _swap_channel_factors(z, x.shape[-3], self.factor**2)
        return z, x.new_zeros(x.shape[:-3])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Move the channels back into patches; the log-determinant is zero."""
        self.inverse_shape(z.shape)
        if self.order == "position_major":
            z = _swap_channel_factors(z, self.factor**2, z.shape[-3] // self.factor**2)
        return _pixel_op(F.pixel_shuffle, z, self.factor), z.new_zeros(z.shape[:-3])

    def forward_shape(self, shape: Shape) -> torch.Size:
        """``(..., C, H, W)`` to ``(..., C f^2, H / f, W / f)``; checks that ``f`` divides H, W."""
        self._check_rank(shape, 3, "input")
        *batch, channels, height, width = shape
        f = self.factor
        if height % f or width % f:
            raise ValueError(
                f"Squeeze expects height and width divisible by {f}, got spatial size "
                f"{height}x{width} (input shape {tuple(shape)}); crop or pad the images, or use "
                "fewer levels"
            )
        return torch.Size((*batch, channels * f * f, height // f, width // f))

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """``(..., C, H, W)`` to ``(..., C / f^2, H f, W f)``; checks that ``f^2`` divides C."""
        self._check_rank(shape, 3, "latent")
        *batch, channels, height, width = shape
        f = self.factor
        if channels % (f * f):
            raise ValueError(
                f"Squeeze.inverse expects channels divisible by {f * f}, got {channels} "
                f"(latent shape {tuple(shape)})"
            )
        return torch.Size((*batch, channels // (f * f), height * f, width * f))

    def extra_repr(self) -> str:
        """The patch size and channel order, for ``repr``."""
        return f"factor={self.factor}, order={self.order!r}"


def _swap_channel_factors(x: Tensor, outer: int, inner: int) -> Tensor:
    """Channel ``a * inner + b`` becomes channel ``b * outer + a`` (a transpose of the factors)."""
    shape = x.shape
    grouped = x.reshape(shape[:-3] + (outer, inner) + shape[-2:])
    return grouped.transpose(-4, -3).reshape(shape)


def _pixel_op(op, x: Tensor, factor: int) -> Tensor:
    # pixel_(un)shuffle take at most one batch dimension on some torch versions.
    if x.dim() == 4:
        return op(x, factor)
    flat = op(x.reshape((-1,) + x.shape[-3:]), factor)
    return flat.reshape(x.shape[:-3] + flat.shape[-3:])


class Patchify(Bijector):
    r"""Cut an image into a sequence of ``p x p`` patches: ``(C, H, W) -> (T, C p^2)``.

    ``T = (H / p)(W / p)`` patches in raster order (row by row of the patch grid); patch ``t``'s
    feature ``c p^2 + i p + j`` is channel ``c`` at offset ``(i, j)`` inside the patch, the
    layout of ``torch.nn.functional.unfold`` with stride ``p`` (and of :class:`Squeeze`'s
    channels). This turns an image into the sequence that TarFlow's causal transformers read.
    :math:`\log|\det J| = 0`.

    Args:
        patch_size: Patch size ``p``; ``H`` and ``W`` must be divisible by it.
        image_width: Width ``W`` of the images, which the inverse needs to lay the patches out
            again; None for square images (``H = W``).

    References:
        Dosovitskiy et al., An Image is Worth 16x16 Words (2021); Zhai et al., Normalizing Flows
        are Capable Generative Models (TarFlow, 2025).

    Example:
        >>> Patchify(4)(torch.randn(5, 3, 32, 32))[0].shape
        torch.Size([5, 64, 48])
    """

    event_rank = 3

    def __init__(self, patch_size: int, *, image_width: int | None = None) -> None:
        super().__init__()
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"Patchify expects patch_size as an int >= 1, got {patch_size!r}")
        if image_width is not None and (
            isinstance(image_width, bool)
            or not isinstance(image_width, int)
            or image_width < 1
            or image_width % patch_size
        ):
            raise ValueError(
                f"Patchify expects image_width as a positive multiple of the patch size "
                f"{patch_size} or None, got {image_width!r}"
            )
        self.patch_size = patch_size
        self.image_width = image_width

    @property
    def latent_rank(self) -> int:
        """Sequences ``(T, d)``: rank 2."""
        return 2

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Cut ``x`` into patches; the log-determinant is zero."""
        self.forward_shape(x.shape)
        patches = _pixel_op(F.pixel_unshuffle, x, self.patch_size)
        return patches.flatten(-2).transpose(-1, -2), x.new_zeros(x.shape[:-3])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Lay the patches out as an image again; the log-determinant is zero."""
        *_, channels, height, width = self.inverse_shape(z.shape)
        p = self.patch_size
        grid = z.transpose(-1, -2).reshape(
            z.shape[:-2] + (channels * p * p, height // p, width // p)
        )
        return _pixel_op(F.pixel_shuffle, grid, p), z.new_zeros(z.shape[:-2])

    def forward_shape(self, shape: Shape) -> torch.Size:
        """``(..., C, H, W)`` to ``(..., H W / p^2, C p^2)``; checks that ``p`` divides H and W."""
        self._check_rank(shape, 3, "input")
        *batch, channels, height, width = shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"Patchify expects height and width divisible by the patch size {p}, got spatial "
                f"size {height}x{width} (input shape {tuple(shape)})"
            )
        if self.image_width is not None and width != self.image_width:
            raise ValueError(
                f"Patchify expects images of width {self.image_width}, got width {width} (input "
                f"shape {tuple(shape)})"
            )
        return torch.Size((*batch, (height // p) * (width // p), channels * p * p))

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """``(..., T, C p^2)`` to ``(..., C, H, W)``, ``W`` from ``image_width`` (or ``H = W``)."""
        self._check_rank(shape, 2, "latent")
        *batch, length, features = shape
        p = self.patch_size
        if self.image_width is None:
            columns = rows = math.isqrt(length)
            what = "a square number of patches"
        else:
            columns, rows = self.image_width // p, length // (self.image_width // p)
            what = f"a multiple of {columns} patches (image width {self.image_width})"
        if features % (p * p) or rows * columns != length:
            raise ValueError(
                f"Patchify.inverse expects {what} with features divisible by {p * p}, got "
                f"{length} patches of {features} features (latent shape {tuple(shape)})"
            )
        return torch.Size((*batch, features // (p * p), rows * p, columns * p))

    def extra_repr(self) -> str:
        """The patch size and image width, for ``repr``."""
        return f"patch_size={self.patch_size}, image_width={self.image_width}"


class Reshape(Bijector):
    r"""Reshape the event from ``in_shape`` to ``out_shape`` (same number of elements).

    :math:`\log|\det J| = 0`.

    Args:
        in_shape: Event shape of ``x``.
        out_shape: Event shape of ``z``.

    Example:
        >>> Reshape((4, 2), (8,))(torch.randn(3, 4, 2))[0].shape
        torch.Size([3, 8])
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(
                f"Reshape expects shapes with the same number of elements, got {self.in_shape} "
                f"({math.prod(self.in_shape)}) and {self.out_shape} ({math.prod(self.out_shape)})"
            )
        self.event_rank = len(self.in_shape)

    @property
    def latent_rank(self) -> int:
        """Length of ``out_shape``."""
        return len(self.out_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reshape the event to ``out_shape``; the log-determinant is zero."""
        check_event_shape(type(self).__name__, x, self.in_shape)
        batch_shape = x.shape[: x.dim() - self.event_rank]
        return x.reshape(batch_shape + self.out_shape), x.new_zeros(batch_shape)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reshape the event back to ``in_shape``; the log-determinant is zero."""
        check_event_shape(type(self).__name__, z, self.out_shape, "latent")
        batch_shape = z.shape[: z.dim() - self.latent_rank]
        return z.reshape(batch_shape + self.in_shape), z.new_zeros(batch_shape)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """Batch shape followed by ``out_shape``."""
        check_event_shape(type(self).__name__, shape, self.in_shape)
        return torch.Size(tuple(shape)[: len(shape) - self.event_rank] + self.out_shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """Batch shape followed by ``in_shape``."""
        check_event_shape(type(self).__name__, shape, self.out_shape, "latent")
        return torch.Size(tuple(shape)[: len(shape) - self.latent_rank] + self.in_shape)

    def extra_repr(self) -> str:
        """Event shapes in and out, for ``repr``."""
        return f"{self.in_shape} -> {self.out_shape}"


class Flatten(Reshape):
    """Flatten an event of shape ``event_shape`` into a vector.

    Example:
        >>> Flatten((3, 4, 4))(torch.randn(2, 3, 4, 4))[0].shape
        torch.Size([2, 48])
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__(event_shape, (math.prod(event_shape),))
