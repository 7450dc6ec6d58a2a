"""How a coupling splits its input: the part that conditions and the part that is transformed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ChannelSplit", "MaskSplit", "Split", "split_for"]


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
        raise NotImplementedError

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        raise NotImplementedError

    def only_transformed(self, log_derivative: Tensor) -> Tensor:
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
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dim = x.dim() - self.event_rank
        if self.contiguous:
            changed = self.channels - self.kept_channels
            return x.narrow(dim, 0, self.kept_channels), x.narrow(dim, self.kept_channels, changed)
        return x.index_select(dim, self.kept_index), x.index_select(dim, self.changed_index)

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        dim = x_a.dim() - self.event_rank
        merged = torch.cat([x_a, y_b], dim=dim)
        return merged if self.contiguous else merged.index_select(dim, self.merge_index)

    def extra_repr(self) -> str:
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
        return tuple(None if size == 1 else size for size in self.mask.shape)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.mask, x

    def merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        # Where the mask is True, x_a = x * 1 = x exactly.
        return torch.where(self.mask, x_a, y_b)

    def only_transformed(self, log_derivative: Tensor) -> Tensor:
        return log_derivative.masked_fill(self.mask, 0.0)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}"


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
