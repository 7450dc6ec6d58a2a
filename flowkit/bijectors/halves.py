"""SplitApply: one bijector for each part of a split (Flow++'s per-half steps)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit._utils import check_event_shape
from flowkit.bijectors.base import Bijector, Shape
from flowkit.bijectors.splits import Split

__all__ = ["SplitApply"]


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
