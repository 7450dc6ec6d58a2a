"""How a coupling splits its input: the part that conditions and the part that is transformed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ChannelSplit", "CheckerboardSplit", "MaskSplit", "Split", "split_for"]


class Split(nn.Module):
    r"""A partition of the event: a kept, conditioning part :math:`x_a`, a transformed :math:`x_b`.

    Subclass contract:

    * ``split(x) -> (x_a, x_b)``: ``x_a`` is what the conditioner sees, ``x_b`` what the elementwise
      map transforms. ``x_a`` must be recoverable from the coupling's output: ``split(z)[0]`` equals
      ``split(x)[0]``, which is what makes the coupling invertible.
    * ``merge(x_a, y_b) -> z`` puts the kept part and the map's output back together. Because
      :math:`x = \mathrm{merge}(x_a, x_b)` is linear in both parts, the gradient with respect to
      ``x`` is ``merge`` of the gradients with respect to ``x_a`` and ``x_b``.
    * ``only_transformed(log_derivative)`` keeps the elementwise log-derivatives of the transformed
      elements (and zeroes those the map computed but ``merge`` discards).
    * ``event_rank`` and ``pattern()``: the event rank and the event shape the split expects
      (``None`` for any size).
    """

    event_rank: int

    def pattern(self) -> tuple[int | None, ...]:
        """Expected event shape, None where any size fits (for ``check_event_shape``)."""
        raise NotImplementedError

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Split ``x`` into the conditioner's input ``x_a`` and the transformed part ``x_b``."""
        raise NotImplementedError

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        """Put the kept ``x_a`` and the transformed ``y_b`` back into one tensor."""
        raise NotImplementedError

    def only_transformed(self, log_derivative: Tensor) -> Tensor:
        """Keep the log-derivatives of the transformed elements (all of them, by default)."""
        return log_derivative


class ChannelSplit(Split):
    r"""Split along the first event dimension (channels of an image, entries of a vector).

    The conditioner sees only the ``C_a`` kept channels and returns parameters for the ``C_b``
    transformed ones. Contiguous leading channels (Glow's halves) are sliced; any other index set is
    gathered.

    Args:
        keep: Bool tensor of shape ``(C,)`` (or ``(C, 1, ..., 1)``); True marks the kept channels.
        event_rank: Rank of the event (3 for images, 1 for vectors); by default ``keep.dim()``.
        owner: Name of the bijector building the split, for error messages.

    Example:
        >>> split = ChannelSplit(torch.tensor([True, False, True]), event_rank=1)
        >>> x_a, x_b = split.split(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> x_a, x_b
        (tensor([[1., 3.]]), tensor([[2.]]))
        >>> split.merge(x_a, x_b * 10)
        tensor([[ 1., 20.,  3.]])
    """

    kept_index: Tensor
    changed_index: Tensor
    merge_index: Tensor

    def __init__(
        self, keep: Tensor, *, event_rank: int | None = None, owner: str = "ChannelSplit"
    ) -> None:
        super().__init__()
        keep = _check_mask(owner, keep)
        if any(size != 1 for size in keep.shape[1:]):
            raise ValueError(
                f"{owner} expects a mask that varies along the first dimension only, "
                f"got shape {tuple(keep.shape)}"
            )
        self.event_rank = keep.dim() if event_rank is None else int(event_rank)
        keep = keep.flatten()
        kept = torch.nonzero(keep).flatten()
        changed = torch.nonzero(~keep).flatten()
        self.channels = keep.numel()
        self.kept_channels = kept.numel()
        self.register_buffer("kept_index", kept)
        self.register_buffer("changed_index", changed)
        self.register_buffer("merge_index", torch.argsort(torch.cat([kept, changed])))
        # Contiguous halves (Glow's case) are sliced, not gathered.
        self.contiguous = bool(torch.equal(kept, torch.arange(kept.numel())))

    def pattern(self) -> tuple[int | None, ...]:
        """Channel count, then any size for the other event dimensions."""
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Select the kept and the changed channels."""
        dim = x.dim() - self.event_rank
        if self.contiguous:
            changed = self.channels - self.kept_channels
            return x.narrow(dim, 0, self.kept_channels), x.narrow(dim, self.kept_channels, changed)
        return x.index_select(dim, self.kept_index), x.index_select(dim, self.changed_index)

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        """Concatenate and restore the original channel order."""
        dim = x_a.dim() - self.event_rank
        merged = torch.cat([x_a, y_b], dim=dim)
        return merged if self.contiguous else merged.index_select(dim, self.merge_index)

    def extra_repr(self) -> str:
        """Kept indices and event rank, for ``repr``."""
        return f"kept={self.kept_index.tolist()}, event_rank={self.event_rank}"


class MaskSplit(Split):
    r"""Split by an arbitrary mask (RealNVP's checkerboard, say) that broadcasts over the event.

    The conditioner sees :math:`x \odot m` (the transformed elements zeroed) and returns parameters
    for every element; the map is applied everywhere and its output kept where the mask is False:
    :math:`z = m \odot x + (1 - m) \odot g(x; \theta)`.

    Args:
        mask: Bool tensor whose number of dimensions is the event rank; True marks the kept
            elements. Dimensions of size 1 broadcast (a ``(1, H, W)`` mask covers every channel).
        owner: Name of the bijector building the split, for error messages.

    Example:
        >>> split = MaskSplit(torch.tensor([[True, False], [False, True]]))
        >>> x_a, x_b = split.split(torch.ones(2, 2))
        >>> x_a
        tensor([[1., 0.],
                [0., 1.]])
    """

    mask: Tensor

    def __init__(self, mask: Tensor, *, owner: str = "MaskSplit") -> None:
        super().__init__()
        mask = _check_mask(owner, mask)
        self.event_rank = mask.dim()
        self.register_buffer("mask", mask)

    def pattern(self) -> tuple[int | None, ...]:
        """The mask's shape, None where it broadcasts."""
        return tuple(None if size == 1 else size for size in self.mask.shape)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` with the changed elements zeroed, and ``x`` itself."""
        return x * self.mask, x

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        """``x_a`` where the mask is True, ``y_b`` elsewhere."""
        # Where the mask is True, x_a = x * 1 = x exactly.
        return torch.where(self.mask, x_a, y_b)

    def only_transformed(self, log_derivative: Tensor) -> Tensor:
        """Zero the log-derivatives where the mask keeps the element."""
        return log_derivative.masked_fill(self.mask, 0.0)

    def extra_repr(self) -> str:
        """The mask's shape, for ``repr``."""
        return f"shape={tuple(self.mask.shape)}"


class CheckerboardSplit(Split):
    r"""A checkerboard whose two colours are gathered into half-width images (Flow++).

    The kept pixels are those with :math:`(i + j)` even (odd if ``flip``), as in
    :func:`~flowkit.bijectors.checkerboard_mask`. Each row holds ``W / 2`` of them, one of each
    pair of columns ``(2k, 2k + 1)``, so ``split`` returns two ``(C, H, W / 2)`` images: the kept
    pixels of each row side by side, and the others likewise. The conditioner then sees only
    the kept half at half the width and returns parameters for the transformed half only, half
    the work of a :class:`MaskSplit` with the same mask (which feeds the whole masked image to
    the conditioner). Neighbours in the half-width image are neighbours on the board (two
    columns apart in a row, diagonal across rows), so convolutions stay local.

    With ``alternate=False`` every row keeps the same column of each pair: the even columns (the
    odd ones if ``flip``). That is the split of Flow++'s official code, whose
    ``CheckerboardSplit`` separates even from odd columns.

    Args:
        height: Image height ``H``.
        width: Image width ``W``; must be even.
        flip: Keep the pixels with :math:`(i + j)` odd (odd columns without ``alternate``).
        alternate: Alternate the kept column from row to row (a checkerboard); False keeps
            whole columns.
        owner: Name of the bijector building the split, for error messages.

    Shapes:
        ``x``: ``(*batch, C, H, W)``; ``x_a`` and ``x_b``: ``(*batch, C, H, W / 2)``.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017), 3.4; Ho et al.,
        Flow++ (2019), whose official code runs its couplings on half-width images.

    Example:
        >>> split = CheckerboardSplit(2, 4)
        >>> x = torch.arange(8.0).reshape(1, 2, 4)
        >>> x_a, x_b = split.split(x)
        >>> x_a, x_b
        (tensor([[[0., 2.],
                 [5., 7.]]]), tensor([[[1., 3.],
                 [4., 6.]]]))
        >>> torch.equal(split.merge(x_a, x_b), x)
        True
    """

    first_kept: Tensor
    event_rank = 3

    def __init__(
        self,
        height: int,
        width: int,
        *,
        flip: bool = False,
        alternate: bool = True,
        owner: str = "CheckerboardSplit",
    ) -> None:
        super().__init__()
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner} expects {name} as a positive int, got {value!r}")
        if width % 2:
            raise ValueError(
                f"{owner} pairs the columns of each row, so it expects an even width, got {width}"
            )
        self.height, self.width, self.flip = height, width, bool(flip)
        self.alternate = bool(alternate)
        # In row i the kept pixel of the pair (2k, 2k + 1) is the first where (i + flip) is even
        # (where flip is False, for whole columns).
        rows = torch.arange(height).view(-1, 1) * int(self.alternate)
        self.register_buffer("first_kept", (rows + int(self.flip)) % 2 == 0)

    def pattern(self) -> tuple[int | None, ...]:
        """Any channel count, the board's height and width."""
        return (None, self.height, self.width)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The kept and the transformed pixels, each as a half-width image."""
        first, second = x.unflatten(-1, (self.width // 2, 2)).unbind(-1)
        return (
            torch.where(self.first_kept, first, second),
            torch.where(self.first_kept, second, first),
        )

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        """Interleave the two half-width images back into the board."""
        first = torch.where(self.first_kept, x_a, y_b)
        second = torch.where(self.first_kept, y_b, x_a)
        return torch.stack([first, second], dim=-1).flatten(-2)

    def extra_repr(self) -> str:
        """Board size and colour, for ``repr``."""
        return (
            f"height={self.height}, width={self.width}, flip={self.flip}, "
            f"alternate={self.alternate}"
        )


def _check_mask(owner: str, mask: Tensor) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.dim() < 1:
        raise TypeError(
            f"{owner} expects a bool mask with at least one dimension, "
            f"got dtype {mask.dtype} and shape {tuple(mask.shape)}"
        )
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError(f"{owner} expects a mask with both True and False entries")
    return mask


def split_for(mask: Tensor | Split, owner: str = "split_for") -> Split:
    """The split a bool mask describes (a :class:`Split` is returned as it is).

    A mask that varies along its first dimension only (a channel or vector mask) gives a
    :class:`ChannelSplit`, any other a :class:`MaskSplit`. ``owner`` names the caller in errors.

    Example:
        >>> split_for(torch.tensor([True, False]))
        ChannelSplit(kept=[0], event_rank=1)
    """
    if isinstance(mask, Split):
        return mask
    mask = torch.as_tensor(mask)
    if mask.dim() >= 1 and all(size == 1 for size in mask.shape[1:]):
        return ChannelSplit(mask, owner=owner)
    return MaskSplit(mask, owner=owner)
