"""Bijectors on the two parts of a split: SplitApply (one bijector each) and SwapHalves."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit._tensors import check_event_shape
from flowkit.bijectors.base import Bijector, Shape
from flowkit.bijectors.splits import Split

__all__ = ["SplitApply", "SwapHalves"]


class SplitApply(Bijector):
    r"""Apply ``first`` to one part of a split and ``second`` to the other.

    With ``(x_a, x_b) = split(x)``: :math:`z = \mathrm{merge}(f_a(x_a), f_b(x_b))` and
    :math:`\log|\det J| = \log|\det J_{f_a}| + \log|\det J_{f_b}|`. Each bijector must keep its
    part's shape. Flow++'s official code runs its steps on the two halves of a checkerboard or
    channel split and gives each half its own normalisation and its own 1x1 convolution; this is
    that step, built from the parts.

    Args:
        split: The partition (e.g. :class:`~flowkit.bijectors.CheckerboardSplit`).
        first: Bijector of the kept part ``x_a``.
        second: Bijector of the other part ``x_b``.

    Shapes:
        ``x``: ``(*batch, *event)`` as ``split`` expects; ``z`` the same;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++ (2019), the official code's ``Norm`` and
        ``Pointwise`` on tuples.

    Example:
        >>> from flowkit.bijectors import ActNorm, CheckerboardSplit
        >>> step = SplitApply(CheckerboardSplit(4, 4), ActNorm(3), ActNorm(3))
        >>> step(torch.randn(2, 3, 4, 4))[0].shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, split: Split, first: Bijector, second: Bijector) -> None:
        super().__init__()
        if not isinstance(split, Split):
            raise TypeError(f"SplitApply expects a Split, got {type(split).__name__}")
        for name, part in (("first", first), ("second", second)):
            if not isinstance(part, Bijector):
                raise TypeError(
                    f"SplitApply expects {name} as a Bijector, got {type(part).__name__}"
                )
            if part.event_rank != split.event_rank or part.latent_rank != split.event_rank:
                raise ValueError(
                    f"SplitApply expects {name} to map events of rank {split.event_rank} (the "
                    f"split's) to the same rank, got {part.event_rank} -> {part.latent_rank}"
                )
        self.split = split
        self.first = first
        self.second = second
        self.event_rank = split.event_rank

    def _map(self, x: Tensor, context: Tensor | None, invert: bool) -> tuple[Tensor, Tensor]:
        check_event_shape("SplitApply", x, self.split.pattern(), "latent" if invert else "input")
        x_a, x_b = self.split.split(x)
        if invert:
            z_a, log_a = self.first.inverse(x_a, context)
            z_b, log_b = self.second.inverse(x_b, context)
        else:
            z_a, log_a = self.first.forward(x_a, context)
            z_b, log_b = self.second.forward(x_b, context)
        return self.split.merge(z_a, z_b), log_a + log_b

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map each part with its bijector; return ``(z, log_abs_det)``."""
        return self._map(x, context, invert=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Invert each part's bijector; return ``(x, log_abs_det)``."""
        return self._map(z, context, invert=True)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking it against the split's."""
        check_event_shape("SplitApply", shape, self.split.pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)


class SwapHalves(Bijector):
    r"""Exchange the two parts of a split: :math:`z = \mathrm{merge}(x_b, x_a)`.

    A fixed permutation, :math:`\log|\det J| = 0`; the parts must have the same shape. Flow++'s
    official code swaps its tuple of halves after every coupling and merges it in tuple order,
    so a stage with an odd number of couplings ends with the halves exchanged: with
    :class:`~flowkit.bijectors.CheckerboardSplit` (``alternate=False``) the odd columns move to
    the even places, with a channel split the second half of the channels comes first.

    Args:
        split: The partition whose parts are exchanged.

    Shapes:
        ``x``: ``(*batch, *event)`` as ``split`` expects; ``z`` the same;
        ``log_abs_det``: ``(*batch,)``.

    Example:
        >>> from flowkit.bijectors import CheckerboardSplit
        >>> swap = SwapHalves(CheckerboardSplit(1, 4, alternate=False))
        >>> swap(torch.arange(4.0).reshape(1, 1, 1, 4))[0]
        tensor([[[[1., 0., 3., 2.]]]])
    """

    def __init__(self, split: Split) -> None:
        super().__init__()
        if not isinstance(split, Split):
            raise TypeError(f"SwapHalves expects a Split, got {type(split).__name__}")
        self.split = split
        self.event_rank = split.event_rank

    def _swap(self, x: Tensor, what: str) -> Tensor:
        check_event_shape("SwapHalves", x, self.split.pattern(), what)
        x_a, x_b = self.split.split(x)
        if x_a.shape != x_b.shape:
            raise ValueError(
                f"SwapHalves expects parts of the same shape, got {tuple(x_a.shape)} and "
                f"{tuple(x_b.shape)} from input shape {tuple(x.shape)}"
            )
        return self.split.merge(x_b, x_a)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Exchange the parts; the log-determinant is zero."""
        return self._swap(x, "input"), x.new_zeros(x.shape[: x.dim() - self.event_rank])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Exchange them back (the same map); the log-determinant is zero."""
        return self._swap(z, "latent"), z.new_zeros(z.shape[: z.dim() - self.event_rank])

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking it against the split's."""
        check_event_shape("SwapHalves", shape, self.split.pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)
