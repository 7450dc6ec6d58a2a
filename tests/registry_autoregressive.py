"""Constructors of the autoregressive and spline bijectors, for the shared bijector registry.

Each entry is ``(id, constructor, event_shape, context_shape)``, optionally followed by a dict of
further :class:`tests.registry.Case` fields; ``constructor()`` returns a fresh bijector whose
contract ``flowkit.testing.check_bijector`` checks at ``event_shape`` (with a context of event
shape ``context_shape`` when that is not None).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit.bijectors import (
    AffineMap,
    Autoregressive,
    ChannelSplit,
    Coupling,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
    RationalQuadraticSpline,
    SplineAutoregressive,
    SplineCoupling,
    SplineMap,
    channel_mask,
    checkerboard_mask,
)
from flowkit.nn import MADE, MLP, CausalTransformer, GlowConditioner

__all__ = ["ENTRIES", "CausalSequenceConditioner", "FlatMLP"]


class FlatMLP(nn.Module):
    """An MLP on flattened events: ``(N, *in_shape)`` (and a context) to ``(N, *out_shape)``."""

    def __init__(self, in_shape: tuple, out_shape: tuple, context_features: int | None = None):
        super().__init__()
        self.in_rank, self.out_shape = len(in_shape), tuple(out_shape)
        inputs, outputs = int(torch.tensor(in_shape).prod()), int(torch.tensor(out_shape).prod())
        self.mlp = MLP(inputs, outputs, (8,), context_features=context_features)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        flat = x.flatten(-self.in_rank)
        return self.mlp(flat, context).unflatten(-1, self.out_shape)


class CausalSequenceConditioner(nn.Module):
    """A small causal conditioner over sequences ``(T, d)``: position ``t`` sees positions ``< t``.

    The parameters of position ``t`` are an affine function of the running sum of the earlier
    positions (zero for ``t = 0``) plus a learned offset per position, and, when a context is given,
    of the context. Weights start at zero (the bias and context weights at PyTorch's default).
    """

    def __init__(self, length: int, features: int, params_per_element: int, context: int = 0):
        super().__init__()
        outputs = features * params_per_element
        # Zero at the start, as MADE's output layer: the harness's perturbation sets the scale.
        self.mix = nn.Linear(features, outputs)
        nn.init.zeros_(self.mix.weight)
        self.offset = nn.Parameter(torch.zeros(length, outputs))
        self.context_layer = nn.Linear(context, outputs, bias=False) if context else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        earlier = torch.cumsum(x, dim=-2) - x
        out = self.mix(earlier) + self.offset
        if self.context_layer is not None:
            out = out + self.context_layer(context).unsqueeze(-2)
        return out


ENTRIES = [
    ("maf", lambda: MaskedAffineAutoregressive(3, hidden_features=(8, 8)), (3,), None),
    (
        "maf-context-residual-reversed",
        lambda: MaskedAffineAutoregressive(
            4, context_features=2, hidden_features=(8, 8), residual=True, order="reversed"
        ),
        (4,),
        (2,),
    ),
    (
        "maf-exp-permuted-order",
        lambda: MaskedAffineAutoregressive(
            3, hidden_features=(8,), order=[1, 2, 0], scale_fn="exp"
        ),
        (3,),
        None,
    ),
    (
        "maf-random-init",
        lambda: MaskedAffineAutoregressive(3, hidden_features=(8,), identity_init=False),
        (3,),
        None,
    ),
    ("iaf", lambda: InverseAutoregressive(3, hidden_features=(8, 8)), (3,), None),
    (
        "iaf-context",
        lambda: InverseAutoregressive(3, context_features=2, hidden_features=(8,), residual=True),
        (3,),
        (2,),
    ),
    ("rq-spline-scalar", lambda: RationalQuadraticSpline(bins=4, tail_bound=1.5), (3,), None),
    (
        "rq-spline-vector",
        lambda: RationalQuadraticSpline((3,), bins=5, tail_bound=2.0, event_rank=1),
        (3,),
        None,
    ),
    (
        "spline-coupling-vector",
        lambda: SplineCoupling(MLP(2, 3 * 11, (8,)), channel_mask(5, event_rank=1), bins=4),
        (5,),
        None,
    ),
    (
        "spline-coupling-vector-context",
        lambda: SplineCoupling(
            MLP(2, 2 * 14, (8,), context_features=3),
            channel_mask(4, event_rank=1, flip=True),
            bins=5,
            tail_bound=2.0,
        ),
        (4,),
        (3,),
    ),
    (
        "spline-coupling-image",
        lambda: SplineCoupling(
            GlowConditioner(2, 2 * 11, hidden_channels=8), channel_mask(4), bins=4
        ),
        (4, 2, 2),
        None,
        # Glow's output layer scales by exp(3 * log_scale), which amplifies the perturbation
        # into near-flat splines; 0.1 keeps their float32 inverse within tolerance.
        {"float32_max_perturb": 0.1},
    ),
    (
        "spline-coupling-checkerboard",
        lambda: SplineCoupling(
            GlowConditioner(2, 2 * 11, hidden_channels=8), checkerboard_mask(2, 2), bins=4
        ),
        (2, 2, 2),
        None,
        {"float32_max_perturb": 0.1},
    ),
    (
        "coupling-spline-map-index-split",
        lambda: Coupling(
            MLP(2, 3 * 11, (8,)),
            ChannelSplit(torch.tensor([False, True, False, True, False])),
            SplineMap(bins=4),
        ),
        (5,),
        None,
    ),
    (
        "coupling-affine-map-checkerboard-context",
        lambda: Coupling(
            FlatMLP((2, 2), (4, 2), context_features=2),
            torch.tensor([True, False, False, True]).reshape(2, 2),
            AffineMap("exp", shift_first=True),
        ),
        (2, 2),
        (2,),
    ),
    (
        "autoregressive-made-affine",
        lambda: Autoregressive(MADE(3, 2, (8,), order="reversed"), AffineMap("sigmoid"), (3,)),
        (3,),
        None,
    ),
    (
        "autoregressive-sequence-spline",
        lambda: Autoregressive(CausalSequenceConditioner(3, 2, 11), SplineMap(bins=4), (3, 2)),
        (3, 2),
        None,
    ),
    (
        "autoregressive-sequence-affine-context",
        lambda: Autoregressive(
            CausalSequenceConditioner(4, 2, 2, context=3), AffineMap("softplus"), (4, 2)
        ),
        (4, 2),
        (3,),
    ),
    (
        "autoregressive-causal-transformer-spline",
        lambda: Autoregressive(
            CausalTransformer(2, 3, 11, channels=8, layers=2, heads=2), SplineMap(bins=4), (3, 2)
        ),
        (3, 2),
        None,
    ),
    (
        # Class labels as context: the case's num_classes draws them.
        "autoregressive-causal-transformer-class-conditional",
        lambda: Autoregressive(
            CausalTransformer(2, 4, 2, channels=8, layers=1, heads=2, num_classes=3),
            AffineMap("exp", shift_first=True),
            (4, 2),
        ),
        (4, 2),
        None,
        {"num_classes": 3},
    ),
    (
        "spline-autoregressive",
        lambda: SplineAutoregressive(3, bins=4, hidden_features=(8, 8)),
        (3,),
        None,
    ),
    (
        "spline-autoregressive-context-residual",
        lambda: SplineAutoregressive(
            4, bins=5, tail_bound=2.0, context_features=2, hidden_features=(8, 8), residual=True
        ),
        (4,),
        (2,),
    ),
]
