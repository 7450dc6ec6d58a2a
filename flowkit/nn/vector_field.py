"""Time-dependent vector-field network for continuous flows: ``(t, x, context) -> dx/dt``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["VectorFieldMLP"]


class VectorFieldMLP(nn.Module):
    r"""A fully connected vector field :math:`f(t, x, c)` with a small time embedding.

    The input layer reads :math:`x`, the context :math:`c` (if any) and the time features
    :math:`(t, \cos \pi k t, \sin \pi k t)_{k=1..K}`; hidden layers use a smooth activation
    (Softplus by default), since the instantaneous change of variables differentiates the field
    with respect to :math:`x` and RNODE's Jacobian penalty differentiates it twice.

    Args:
        features: Dimension :math:`D` of :math:`x` and of the output.
        hidden_features: Width of each hidden layer.
        context_features: Features of the context, or None.
        time_frequencies: Number :math:`K` of cosine/sine pairs of the time embedding.
        activation: Module class of the hidden activations.

    Shapes:
        ``t``: a scalar tensor (or ``(N,)``, one time per row); ``x``: ``(N, D)``; context
        ``(N, C)``; output ``(N, D)``.

    Example:
        >>> field = VectorFieldMLP(2, hidden_features=(16,))
        >>> field(torch.tensor(0.5), torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    frequencies: Tensor

    def __init__(
        self,
        features: int,
        hidden_features: Sequence[int] = (64, 64),
        *,
        context_features: int | None = None,
        time_frequencies: int = 3,
        activation: type[nn.Module] = nn.Softplus,
    ) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(
                f"VectorFieldMLP expects features as an integer >= 1, got {features!r}"
            )
        if time_frequencies < 0:
            raise ValueError(
                f"VectorFieldMLP expects time_frequencies >= 0, got {time_frequencies!r}"
            )
        self.features = features
        self.context_features = context_features
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, time_frequencies + 1, dtype=torch.float32)
        )
        width = features + 1 + 2 * time_frequencies + (context_features or 0)
        layers: list[nn.Module] = []
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        layers.append(nn.Linear(width, features))
        self.network = nn.Sequential(*layers)

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The velocity ``dx/dt`` at time ``t`` (shape of ``x``)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        time = t.expand(x.shape[:-1]).unsqueeze(-1)
        angles = time * self.frequencies.to(x.dtype)
        parts = [x, time, torch.cos(angles), torch.sin(angles)]
        if self.context_features is not None:
            if context is None or context.shape[-1] != self.context_features:
                got = "None" if context is None else f"shape {tuple(context.shape)}"
                raise ValueError(
                    f"VectorFieldMLP expects a context with {self.context_features} features, "
                    f"got {got}"
                )
            parts.append(context.expand(x.shape[:-1] + context.shape[-1:]))
        return self.network(torch.cat(parts, dim=-1))
