"""A causal transformer conditioner for autoregressive flows over sequences (TarFlow)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalTransformer"]

# Standard deviation of the initial position and class embeddings (the official TarFlow code's).
EMBEDDING_INIT_STD = 1e-2


class _KeyValueCache:
    """The keys and values of the positions decoded so far, for one attention layer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store one position's ``k`` and ``v`` ``(N, heads, 1, c)``; return all stored so far."""
        assert k.shape[2] == 1 and self.length < self.capacity, "one position at a time"
        if self.keys is None or self.values is None:
            # Allocated once: growing by concatenation would copy the cache at every position.
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.keys, self.values = k.new_empty(shape), v.new_empty(shape)
        self.keys[:, :, self.length] = k[:, :, 0]
        self.values[:, :, self.length] = v[:, :, 0]
        self.length += 1
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class _CausalSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention in which position ``t`` attends to positions ``<= t``."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(
        self, h: Tensor, query_scale: Tensor | None = None, cache: _KeyValueCache | None = None
    ) -> Tensor:
        """Attend causally over ``h``, or, with a cache, from one new position to all before it.

        ``query_scale`` ``(N, 1, 1, 1)`` divides each sequence's attention logits by its
        attention temperature.
        """
        batch, length, channels = h.shape
        qkv = self.qkv(self.norm(h)).reshape(batch, length, 3, self.heads, channels // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if query_scale is not None:
            q = q * query_scale
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values = cache.append(k, v)
            out = F.scaled_dot_product_attention(q, keys, values)
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

    def forward(
        self, h: Tensor, query_scale: Tensor | None = None, cache: _KeyValueCache | None = None
    ) -> Tensor:
        h = h + self.attention(h, query_scale, cache)
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
    mean of the class embeddings (as in the official code); the label -1 selects it. The map is
    deterministic in training mode too: classifier-free training drops each example's label once
    for all blocks, which is the caller's job (TarFlow's trainer does it, see
    :attr:`~flowkit.Flow.training_label_dropout`).

    **Guidance.** With ``guidance`` :math:`w \ne 0` (an attribute, 0 by default), each call
    computes the conditional parameters :math:`\theta_c` and the unconditional ones
    :math:`\theta_u` in one batched pass and returns :math:`\theta_c + w_t (\theta_c - \theta_u)`.
    Set it only while decoding (TarFlow's flow does so in ``sample``): in the autoregressive
    inverse every decoding step then mixes the two parameter sets, as the paper's guidance does,
    while the density direction stays unguided. Three more attributes shape it, as the official
    sampler's options do:

    * ``annealed_guidance``: :math:`w_t = w\, t / (T - 1)` at position :math:`t`, a ramp from 0
      at the first position to :math:`w` at the last (otherwise :math:`w_t = w`);
    * ``guided_parameters``: the indices ``p`` (of the ``P`` parameters per element) that are
      guided, the others left conditional; None guides all;
    * ``attention_temperature`` :math:`\tau`: the unconditional pass divides its attention logits
      by :math:`\tau` (the official code's ``attn_temp``). It is what makes guidance of a model
      without classes meaningful: that model is then guided away from its own tempered-attention
      version.

    **Incremental decoding.** :meth:`incremental_decoder` returns a step function that computes
    the parameters of one position at a time, keeping each attention layer's keys and values of
    the positions already decoded (a key/value cache); :class:`~flowkit.bijectors.Autoregressive`
    uses it to invert in one token's work per position instead of one full pass per position.

    Args:
        features: Size ``d`` of each position (``C p^2`` for patches of ``p x p`` pixels).
        length: Sequence length ``T`` (for the learned position embeddings).
        params_per_element: Parameters ``P`` of the elementwise map per element (2 for affine).
        channels: Width of the transformer.
        layers: Number of attention + MLP blocks.
        heads: Attention heads; ``channels`` must be divisible by it.
        expansion: Width of the MLP's hidden layer, in multiples of ``channels``.
        num_classes: Classes of a class-conditional model, or None.

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
        self.features = features
        self.length = length
        self.params_per_element = params_per_element
        self.num_classes = num_classes
        self.guidance = 0.0
        self.annealed_guidance = False
        self.guided_parameters: tuple[int, ...] | None = None
        self.attention_temperature = 1.0
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

    def _labels(self, context: Tensor | None, batch: int) -> Tensor | None:
        """Integer labels (-1 for the null class), None for a model without classes."""
        if self.class_embedding is None:
            if context is not None:
                raise ValueError(
                    "CausalTransformer was built without num_classes but got a context of shape "
                    f"{tuple(context.shape)}"
                )
            return None
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
        return context.long()

    def _embed_classes(self, labels: Tensor) -> Tensor:
        table = self.class_embedding
        assert table is not None
        null = labels < 0
        embedded = table[labels.clamp_min(0)]
        return torch.where(null.unsqueeze(-1), table.mean(0).expand_as(embedded), embedded)

    def _guided_batch(self, labels: Tensor | None, batch: int, like: Tensor) -> tuple:
        """Labels and attention scales of the doubled batch: conditional, then unconditional."""
        if labels is not None:
            labels = torch.cat([labels, torch.full_like(labels, -1)])
        query_scale = None
        if self.attention_temperature != 1:
            scales = [1.0] * batch + [1.0 / self.attention_temperature] * batch
            query_scale = torch.tensor(scales, dtype=like.dtype, device=like.device)
            query_scale = query_scale.view(-1, 1, 1, 1)
        return labels, query_scale

    def _mix(self, conditional: Tensor, unconditional: Tensor, position: Tensor | int) -> Tensor:
        r"""The guided parameters :math:`\theta_c + w_t (\theta_c - \theta_u)` at ``position``.

        ``position`` is a ``(T, 1)`` tensor or an int; the attributes set annealing and which
        parameters are guided.
        """
        difference = conditional - unconditional
        if self.guided_parameters is not None:
            index = torch.arange(difference.shape[-1], device=difference.device)
            guided = torch.zeros_like(index, dtype=torch.bool)
            for parameter in self.guided_parameters:
                guided |= index % self.params_per_element == parameter
            difference = difference * guided.to(difference.dtype)
        weight: Tensor | float = self.guidance
        if self.annealed_guidance:
            weight = self.guidance * (position / max(self.length - 1, 1))
        return conditional + weight * difference

    def _network(self, x: Tensor, labels: Tensor | None, query_scale: Tensor | None) -> Tensor:
        h = self.input(x) + self.position
        if labels is not None:
            h = h + self._embed_classes(labels).unsqueeze(-2).to(h.dtype)
        for block in self.blocks:
            h = block(h, query_scale)
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
        labels = self._labels(context, x.shape[0])
        if self.guidance == 0:
            return self._network(x, labels, None)
        labels, query_scale = self._guided_batch(labels, x.shape[0], x)
        conditional, unconditional = self._network(torch.cat([x, x]), labels, query_scale).chunk(2)
        positions = torch.arange(self.length, device=x.device).unsqueeze(-1)
        return self._mix(conditional, unconditional, positions.to(x.dtype))

    def incremental_decoder(
        self, context: Tensor | None, batch: int
    ) -> Callable[[Tensor | None], Tensor]:
        """A step function for decoding ``batch`` sequences one position at a time.

        Called first with None and then with each decoded position :math:`x_t` ``(N, d)`` in
        turn, it returns the parameters of the next position ``(N, P * d)``: the same values as
        :meth:`forward` at that position (with the same guidance settings), up to round-off.
        Each call runs one token through the layers, attending to the keys and values it has
        kept of the tokens before.

        Args:
            context: ``(N,)`` labels of a class-conditional model, else None.
            batch: Number ``N`` of sequences.
        """
        return _IncrementalDecoder(self, self._labels(context, batch), batch)

    def extra_repr(self) -> str:
        """Sizes and conditioning, for ``repr``."""
        return (
            f"features={self.features}, length={self.length}, "
            f"params_per_element={self.params_per_element}, num_classes={self.num_classes}"
        )


class _IncrementalDecoder:
    """:meth:`CausalTransformer.incremental_decoder`'s step function, with its key/value caches."""

    def __init__(self, net: CausalTransformer, labels: Tensor | None, batch: int) -> None:
        self.net = net
        self.batch = batch
        self.guided = net.guidance != 0
        self.labels = labels
        weight = net.output.weight
        self.query_scale: Tensor | None = None
        if self.guided:
            self.labels, self.query_scale = net._guided_batch(labels, batch, weight)
        self.caches = [_KeyValueCache(net.length) for _ in net.blocks]
        self.position = 0

    def __call__(self, previous: Tensor | None) -> Tensor:
        net, position = self.net, self.position
        if position >= net.length:
            raise ValueError(
                f"CausalTransformer's decoder has produced all {net.length} positions already"
            )
        if (previous is None) != (position == 0):
            got = "None" if previous is None else "a tensor"
            raise ValueError(
                "CausalTransformer's decoder expects None for the first position and the "
                f"decoded previous position after it; got {got} at position {position}"
            )
        self.position += 1
        if previous is None:
            weight = net.output.weight
            return weight.new_zeros(self.batch, net.params_per_element * net.features)
        if previous.shape != (self.batch, net.features):
            raise ValueError(
                f"CausalTransformer's decoder expects a position of shape "
                f"({self.batch}, {net.features}), got {tuple(previous.shape)}"
            )
        x = torch.cat([previous, previous]) if self.guided else previous
        # The token at position - 1 gives the parameters of this position (see _network).
        h = net.input(x) + net.position[position - 1]
        if self.labels is not None:
            h = h + net._embed_classes(self.labels).to(h.dtype)
        h = h.unsqueeze(1)
        for block, cache in zip(net.blocks, self.caches):
            h = block(h, self.query_scale, cache)
        out = net.output(h[:, 0])
        if not self.guided:
            return out
        conditional, unconditional = out.chunk(2)
        return net._mix(conditional, unconditional, position)
