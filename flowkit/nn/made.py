"""MADE: masked autoencoder networks whose outputs respect an autoregressive order of the inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._tensors import check_event_shape

__all__ = ["MADE", "MaskedLinear", "autoregressive_order"]

Order = Union[str, Sequence[int], Tensor]


def autoregressive_order(features: int, order: Order = "natural") -> Tensor:
    """The position of each feature in an autoregressive order, as a long tensor of shape ``(D,)``.

    Args:
        features: Number of features ``D``.
        order: ``"natural"`` (feature ``i`` is ``i``-th), ``"reversed"`` (feature ``i`` is
            ``(D - 1 - i)``-th), or an explicit permutation of ``range(D)`` whose entry ``i`` is the
            position of feature ``i``.

    Raises:
        ValueError: If ``order`` is an unknown name or not a permutation of ``range(D)``.

    Example:
        >>> autoregressive_order(3, "reversed")
        tensor([2, 1, 0])
    """
    if features < 1:
        raise ValueError(f"autoregressive_order expects features >= 1, got {features}")
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(features)
        if order == "reversed":
            return torch.arange(features - 1, -1, -1)
        raise ValueError(
            f"autoregressive_order expects 'natural', 'reversed' or a permutation, got {order!r}"
        )
    positions = torch.as_tensor(order, dtype=torch.long).flatten()
    if positions.numel() != features or not torch.equal(
        torch.sort(positions).values, torch.arange(features)
    ):
        raise ValueError(
            f"autoregressive_order expects a permutation of range({features}), "
            f"got {positions.tolist()}"
        )
    return positions


class MaskedLinear(nn.Linear):
    r"""Linear layer whose weight is multiplied by a fixed 0/1 mask: :math:`y = (W \odot M) x + b`.

    The mask is a buffer (saved in the state dict, moved by ``.to()``); the weight keeps its full
    shape, so masked-out entries are parameters that never receive a gradient.

    Args:
        in_features: Input features.
        out_features: Output features.
        mask: Tensor of shape ``(out_features, in_features)``; nonzero entries are connections.
        bias: Add a learned bias.

    Example:
        >>> layer = MaskedLinear(2, 2, torch.tensor([[1, 0], [1, 1]]))
        >>> layer.weight.shape, layer.mask.dtype
        (torch.Size([2, 2]), torch.float32)
    """

    mask: Tensor

    def __init__(
        self, in_features: int, out_features: int, mask: Tensor, *, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear expects a mask of shape ({out_features}, {in_features}), "
                f"got {tuple(mask.shape)}"
            )
        self.register_buffer("mask", (mask != 0).to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Linear map with the masked weight."""
        return F.linear(x, self.weight * self.mask, self.bias)


class _MaskedResidualBlock(nn.Module):
    """``h + W_2 act(W_1 act(h) + V c)`` with masks that keep every unit's degree."""

    def __init__(
        self, mask: Tensor, context_features: int | None, activation: type[nn.Module]
    ) -> None:
        super().__init__()
        width = mask.shape[0]
        self.activation = activation()
        self.first = MaskedLinear(width, width, mask)
        self.context = (
            None if context_features is None else nn.Linear(context_features, width, bias=False)
        )
        self.second = MaskedLinear(width, width, mask)
        # The block starts as the identity, so depth does not change the initial function.
        nn.init.zeros_(self.second.weight)
        nn.init.zeros_(self.second.bias)

    def forward(self, h: Tensor, context: Tensor | None) -> Tensor:
        update = self.first(self.activation(h))
        if self.context is not None:
            update = update + self.context(context)
        return h + self.second(self.activation(update))


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation: a network autoregressive in its input.

    With the features of :math:`x \in \mathbb{R}^D` ranked by an order :math:`\pi` (``order``), the
    output parameters of feature :math:`i` depend only on the features :math:`j` with
    :math:`\pi(j) < \pi(i)` (and on the context):
    :math:`\partial \theta_i / \partial x_j = 0` whenever :math:`\pi(j) \ge \pi(i)`. Each unit gets
    a degree: input :math:`j` has degree :math:`\pi(j) + 1`; hidden units cycle through
    :math:`\{1, \dots, D - 1\}` (from 0 when a context is given, so some units see the context
    alone and even the first feature is conditioned); a connection from degree :math:`a` to a hidden
    unit of degree :math:`b` exists iff :math:`b \ge a`, and to an output of degree :math:`b` iff
    :math:`b > a`. Hidden layers at least ``D`` wide realise every allowed dependency.

    The context enters every hidden layer unmasked through a linear map without bias. With
    ``residual=True`` the hidden layers are residual blocks of masked layers (as in the neural
    spline flow code), which needs equal widths.

    Output layout: ``P`` parameters per feature, interleaved: the output has ``D * P`` entries and
    entry ``i * P + p`` is parameter ``p`` of feature ``i``, so ``theta[..., p::P]`` holds
    parameter ``p`` of every feature and ``theta.unflatten(-1, (D, P))[..., i, :]`` those of feature
    ``i``. The output layer starts at zero (``zero_init=True``), so flows start as the identity.

    Args:
        features: Number of input features ``D``.
        params_per_feature: Number of outputs ``P`` per feature.
        hidden_features: Width of each hidden layer (of each residual block when ``residual``).
        context_features: Features of the context, or None for an unconditional network (which
            ignores a context it is given, as :class:`~flowkit.nn.MLP` does).
        residual: Use residual blocks instead of plain hidden layers.
        order: ``"natural"``, ``"reversed"``, or the position of each feature; see
            :func:`autoregressive_order`.
        activation: Module class for the hidden activations.
        zero_init: Initialise the output layer to zero.

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, context_features)`` (broadcast against
        ``x``'s batch); output: ``(*batch, D * P)``.

    References:
        Germain, Gregor, Murray & Larochelle, MADE: Masked Autoencoder for Distribution Estimation
        (2015); Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019).

    Example:
        >>> made = MADE(3, 2, hidden_features=(16, 16), context_features=4)
        >>> made(torch.randn(5, 3), torch.randn(5, 4)).shape
        torch.Size([5, 6])
    """

    order: Tensor

    def __init__(
        self,
        features: int,
        params_per_feature: int = 1,
        hidden_features: Sequence[int] = (64, 64),
        *,
        context_features: int | None = None,
        residual: bool = False,
        order: Order = "natural",
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = tuple(int(h) for h in hidden_features)
        if features < 1 or params_per_feature < 1:
            raise ValueError(
                f"MADE expects features >= 1 and params_per_feature >= 1, "
                f"got {features} and {params_per_feature}"
            )
        if not hidden_features or min(hidden_features) < 1:
            raise ValueError(
                f"MADE expects at least one hidden layer of width >= 1, got {hidden_features}"
            )
        if residual and len(set(hidden_features)) != 1:
            raise ValueError(
                f"MADE with residual blocks expects equal hidden widths, got {hidden_features}"
            )
        if context_features is not None and context_features < 1:
            raise ValueError(f"MADE expects context_features >= 1 or None, got {context_features}")
        self.features = int(features)
        self.params_per_feature = int(params_per_feature)
        self.hidden_features = hidden_features
        self.context_features = context_features
        self.residual = bool(residual)
        self.register_buffer("order", autoregressive_order(features, order))

        input_degrees = self.order + 1
        # Degree-0 units see no input; they carry the context (or, for D = 1, a constant).
        lowest = 0 if context_features is not None or features == 1 else 1
        self.activation = activation()
        self.context_layers = nn.ModuleList()
        widths = hidden_features[:1] if residual else hidden_features
        degrees = input_degrees
        layers = []
        for width in widths:
            hidden_degrees = lowest + torch.arange(width) % (features - lowest)
            mask = hidden_degrees[:, None] >= degrees[None, :]
            layers.append(MaskedLinear(degrees.numel(), width, mask))
            if context_features is not None:
                self.context_layers.append(nn.Linear(context_features, width, bias=False))
            degrees = hidden_degrees
        self.hidden_layers = nn.ModuleList(layers)
        block_mask = degrees[:, None] >= degrees[None, :]
        self.blocks = nn.ModuleList(
            _MaskedResidualBlock(block_mask, context_features, activation)
            for _ in (hidden_features if residual else ())
        )
        output_degrees = input_degrees.repeat_interleave(self.params_per_feature)
        output_mask = output_degrees[:, None] > degrees[None, :]
        self.output_layer = MaskedLinear(degrees.numel(), output_degrees.numel(), output_mask)
        if zero_init:
            nn.init.zeros_(self.output_layer.weight)
            nn.init.zeros_(self.output_layer.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Parameters of every feature, each from earlier features (and the context) only."""
        check_event_shape("MADE", x, (self.features,))
        if self.context_features is not None:
            if context is None:
                raise ValueError(
                    f"MADE expects a context with {self.context_features} features, got None"
                )
            check_event_shape("MADE", context, (self.context_features,), "context")
            context = context.expand(x.shape[:-1] + context.shape[-1:])
        h = x
        for index, layer in enumerate(self.hidden_layers):
            h = layer(h)
            if self.context_features is not None:
                h = h + self.context_layers[index](context)
            if not self.residual:
                h = self.activation(h)
        for block in self.blocks:
            h = block(h, context)
        if self.residual:
            h = self.activation(h)
        return self.output_layer(h)

    def extra_repr(self) -> str:
        """Sizes and options, for ``repr``."""
        return (
            f"features={self.features}, params_per_feature={self.params_per_feature}, "
            f"hidden_features={self.hidden_features}, context_features={self.context_features}, "
            f"residual={self.residual}"
        )
