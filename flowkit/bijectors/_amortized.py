"""Per-sample parameters from a context: the amortised flows of variational auto-encoders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._tensors import check_dtype, check_event_shape

__all__ = ["ContextOffsets"]


class ContextOffsets(nn.Module):
    """A linear map of the context added to a bijector's raw parameters, one set per sample.

    Amortised flows (Rezende & Mohamed; van den Berg et al.) take their parameters from an
    encoder's output for each data point. Here the bijector keeps its own raw parameters as the
    shared part, and adds a linear function of the context, so a network upstream produces the
    context and this layer is its head. The weights start at zero: the flow starts as its
    unconditional self.

    Args:
        owner: The bijector's name, for error messages.
        context_features: Size ``C`` of the context vectors.
        shapes: Shapes of the raw parameters, in the order :meth:`offset` takes them.
    """

    def __init__(self, owner: str, context_features: int, shapes: Sequence[torch.Size]) -> None:
        super().__init__()
        self.owner = owner
        self.context_features = int(context_features)
        self.shapes = [torch.Size(shape) for shape in shapes]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.linear = nn.Linear(self.context_features, sum(self.sizes), bias=False)
        nn.init.zeros_(self.linear.weight)

    def offset(self, parameters: Sequence[Tensor], context: Tensor | None) -> list[Tensor]:
        """Each parameter plus its offset, shaped ``(*batch, *shape)`` for each context row."""
        if context is None:
            raise ValueError(
                f"{self.owner} expects a context of shape (*batch, {self.context_features}), "
                "got None"
            )
        check_dtype(self.owner, context, "context")
        check_event_shape(self.owner, context, (self.context_features,), "context")
        pieces = self.linear(context).split(self.sizes, dim=-1)
        return [
            parameter + piece.reshape(piece.shape[:-1] + shape)
            for parameter, piece, shape in zip(parameters, pieces, self.shapes)
        ]

    def extra_repr(self) -> str:
        """Context features and the number of raw parameters, for ``repr``."""
        return f"context_features={self.context_features}, parameters={sum(self.sizes)}"
