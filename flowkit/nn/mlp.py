"""Multi-layer perceptron conditioner for vector data, with optional context input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected conditioner ``(x, context) -> theta`` for vector couplings and priors.

    The context, if any, is concatenated to the input. The last layer starts at zero
    (``zero_init=True``), so couplings start as the identity.

    Args:
        in_features: Features of ``x`` (0 for a network of the context alone).
        out_features: Features of the output.
        hidden_features: Width of each hidden layer.
        context_features: Features of the context, or None for an unconditional network.
        activation: Module class for the hidden activations.
        zero_init: Initialise the output layer to zero.

    Example:
        >>> net = MLP(2, 4, hidden_features=(16, 16), context_features=3)
        >>> net(torch.randn(5, 2), torch.randn(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        *,
        context_features: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.context_features = context_features
        width = self.in_features + (context_features or 0)
        if width == 0:
            raise ValueError("MLP expects in_features > 0 or context_features > 0")
        layers: list[nn.Module] = []
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        last = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the network to ``x``, concatenated with the context when there is one."""
        if self.context_features is None:
            return self.network(x)
        if context is None or context.shape[-1] != self.context_features:
            got = "None" if context is None else f"shape {tuple(context.shape)}"
            raise ValueError(
                f"MLP expects a context with {self.context_features} features, got {got}"
            )
        if self.in_features == 0:
            return self.network(context)
        context = context.expand(x.shape[:-1] + context.shape[-1:])
        return self.network(torch.cat([x, context], dim=-1))
