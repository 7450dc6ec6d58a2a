"""A causal transformer conditioner for autoregressive flows over sequences (TarFlow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalTransformer"]

# Standard deviation of the initial position and class embeddings (the official TarFlow code's).
EMBEDDING_INIT_STD = 1e-2


class _CausalSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention in which position ``t`` attends to positions ``<= t``."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, h: Tensor) -> Tensor:
        batch, length, channels = h.shape
        qkv = self.qkv(self.norm(h)).reshape(batch, length, 3, self.heads, channels // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(batch, length, channels))


class _Block(nn.Module):
    """Transformer block: ``h + attention(h)``, then ``h + MLP(h)``, each after a layer norm."""

    def __init__(self, channels: int, heads: int, expansion: int) -> None:
        super().__init__()
        self.attention = _CausalSelfAttention(channels, heads)
        self.mlp = nn.Sequential(
            nn.LayerNorm(channels),
            nn.Linear(channels, expansion * channels),
            nn.GELU(),
            nn.Linear(expansion * channels, channels),
        )

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attention(h)
        return h + self.mlp(h)


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"CausalTransformer expects {name} as an int >= 1, got {value!r}")
    return value


class CausalTransformer(nn.Module):
    r"""Causal transformer over sequences ``(T, d)``: position ``t``'s parameters see ``x_{<t}``.

    The conditioner of TarFlow's autoregressive blocks, for
    :class:`~flowkit.bijectors.Autoregressive` over ``(T, d)`` events (patch sequences). Each
    position is projected from ``d`` to ``channels`` features, a learned position embedding (and,
    for a class-conditional model, a class embedding) is added, and ``layers`` pre-norm blocks of
    causal multi-head self-attention and a GELU MLP follow. A zero-initialised linear layer maps
    each position to ``P * d`` parameters. The outputs are then shifted one position along the
    sequence, so that the parameters at position :math:`t` are computed from positions
    :math:`0, \dots, t - 1` only, and position 0 gets zeros (constant parameters, the official
    code's choice). A freshly built conditioner outputs zeros: the flow starts as the identity
    for maps whose zero parameters are the identity (:class:`~flowkit.bijectors.AffineMap` with
    ``"exp"``).

    **Class conditioning.** With ``num_classes``, the context is an integer label per sequence,
    and its embedding is added to every token. The null class of classifier-free guidance is the
    mean of the class embeddings (as in the official code); the label -1 selects it. In training
    mode, with autograd on, each label is replaced by the null class with probability
    ``label_dropout``, so that the same network learns the unconditional model (the draws are
    random: the map is then not deterministic, so do not combine a positive ``label_dropout`` with
    memory-saving backpropagation).

    **Guidance.** With ``guidance`` :math:`w > 0` (an attribute, 0 by default), each call
    computes the conditional parameters :math:`\theta_c` and the unconditional ones
    :math:`\theta_u` in one batched pass and returns :math:`\theta_c + w (\theta_c - \theta_u)`.
    Set it only while decoding (TarFlow's flow does so in ``sample``): in the autoregressive
    inverse every decoding step then mixes the two parameter sets, as the paper's guidance does,
    while the density direction stays unguided.

    Args:
        features: Size ``d`` of each position (``C p^2`` for patches of ``p x p`` pixels).
        length: Sequence length ``T`` (for the learned position embeddings).
        params_per_element: Parameters ``P`` of the elementwise map per element (2 for affine).
        channels: Width of the transformer.
        layers: Number of attention + MLP blocks.
        heads: Attention heads; ``channels`` must be divisible by it.
        expansion: Width of the MLP's hidden layer, in multiples of ``channels``.
        num_classes: Classes of a class-conditional model, or None.
        label_dropout: Probability of replacing a label by the null class in training.

    Shapes:
        ``x``: ``(N, T, d)``; ``context``: ``(N,)`` integer labels or None; output
        ``(N, T, P * d)``, entry ``j * P + p`` being parameter ``p`` of element ``j``.

    References:
        Zhai et al., Normalizing Flows are Capable Generative Models (TarFlow, ICML 2025);
        Ho & Salimans, Classifier-Free Diffusion Guidance (2022).

    Example:
        >>> net = CausalTransformer(4, 6, channels=16, layers=1, heads=2)
        >>> net(torch.randn(3, 6, 4)).shape
        torch.Size([3, 6, 8])
    """

    def __init__(
        self,
        features: int,
        length: int,
        params_per_element: int = 2,
        *,
        channels: int = 128,
        layers: int = 2,
        heads: int = 4,
        expansion: int = 4,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("features", features),
            ("length", length),
            ("params_per_element", params_per_element),
            ("channels", channels),
            ("layers", layers),
            ("heads", heads),
            ("expansion", expansion),
        ):
            _check_positive(name, value)
        if channels % heads:
            raise ValueError(
                f"CausalTransformer expects channels divisible by heads, got channels={channels} "
                f"and heads={heads}"
            )
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise ValueError(
                f"CausalTransformer expects num_classes as an int >= 2 or None, got {num_classes!r}"
            )
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(
                f"CausalTransformer expects label_dropout in [0, 1), got {label_dropout}"
            )
        self.features = features
        self.length = length
        self.params_per_element = params_per_element
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.guidance = 0.0
        self.input = nn.Linear(features, channels)
        self.position = nn.Parameter(torch.randn(length, channels) * EMBEDDING_INIT_STD)
        self.class_embedding: nn.Parameter | None = None
        if num_classes is not None:
            self.class_embedding = nn.Parameter(
                torch.randn(num_classes, channels) * EMBEDDING_INIT_STD
            )
        self.blocks = nn.ModuleList([_Block(channels, heads, expansion) for _ in range(layers)])
        self.output = nn.Linear(channels, params_per_element * features)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def _labels(self, context: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Integer labels, -1 for the null class; dropped at random in training."""
        if context is None:
            raise ValueError(
                f"CausalTransformer is class-conditional ({self.num_classes} classes) and expects "
                "a label per sequence as context (-1 for the null class), got None"
            )
        if context.is_floating_point() or context.is_complex() or context.dtype == torch.bool:
            raise TypeError(
                f"CausalTransformer expects integer class labels as context, got dtype "
                f"{context.dtype}"
            )
        if context.shape != (batch,):
            raise ValueError(
                f"CausalTransformer expects one label per sequence, shape ({batch},), got "
                f"{tuple(context.shape)}"
            )
        labels = context.long()
        if self.training and self.label_dropout > 0 and torch.is_grad_enabled():
            dropped = torch.rand(batch, device=device) < self.label_dropout
            labels = labels.masked_fill(dropped, -1)
        return labels

    def _embed_classes(self, labels: Tensor) -> Tensor:
        table = self.class_embedding
        assert table is not None
        null = labels < 0
        embedded = table[labels.clamp_min(0)]
        return torch.where(null.unsqueeze(-1), table.mean(0).expand_as(embedded), embedded)

    def _network(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.input(x) + self.position
        if labels is not None:
            h = h + self._embed_classes(labels).unsqueeze(-2).to(h.dtype)
        for block in self.blocks:
            h = block(h)
        out = self.output(h)
        # Position t's parameters come from the token at t - 1, which has seen x_0 .. x_{t-1}.
        return torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The parameters of every position, shape ``(N, T, P * d)``, as the class explains."""
        if x.dim() != 3 or x.shape[1:] != (self.length, self.features):
            raise ValueError(
                f"CausalTransformer expects input of shape (N, {self.length}, {self.features}), "
                f"got {tuple(x.shape)}"
            )
        if self.class_embedding is None:
            if context is not None:
                raise ValueError(
                    "CausalTransformer was built without num_classes but got a context of shape "
                    f"{tuple(context.shape)}"
                )
            return self._network(x, None)
        labels = self._labels(context, x.shape[0], x.device)
        if self.guidance == 0:
            return self._network(x, labels)
        both = self._network(torch.cat([x, x]), torch.cat([labels, torch.full_like(labels, -1)]))
        conditional, unconditional = both.chunk(2)
        return conditional + self.guidance * (conditional - unconditional)

    def extra_repr(self) -> str:
        """Sizes and conditioning, for ``repr``."""
        return (
            f"features={self.features}, length={self.length}, "
            f"params_per_element={self.params_per_element}, num_classes={self.num_classes}"
        )
