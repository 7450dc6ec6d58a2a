"""One registry of bijector constructors, shared by the contract and interop tests.

Each :class:`Case` builds a bijector for an event shape drawn from its strategy, and says which
batch shapes it accepts and what context it needs. ``tests/bijectors/test_harness_registry.py``
runs ``check_bijector`` on every case and fails if a public bijector class has no case. Entries
kept beside the code they test (``tests/registry_linear.py``, ``tests/registry_autoregressive.py``,
``tests/registry_variational.py``) are adopted at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hypothesis import Phase, find, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.distributions import transform_to
from torch.distributions import transforms as T

from flowkit.bijectors import (
    ActNorm,
    AdditiveCoupling,
    Affine,
    AffineConv1x1,
    AffineCoupling,
    Bijector,
    Compose,
    Exp,
    FactorOut,
    Flatten,
    Inverse,
    InvertibleConv1x1,
    LeakyReLU,
    Logit,
    Patchify,
    Permute,
    Reshape,
    Sigmoid,
    Softplus,
    Squeeze,
    Standardize,
    Tanh,
    channel_mask,
    checkerboard_mask,
    from_transform,
)
from flowkit.initialization import DataDependentInit, initialize
from flowkit.nn import MLP, EdgeConv2d, GlowConditioner, GlowTopPrior, ZeroConv2d
from flowkit.testing.strategies import batch_shapes, image_shapes, vector_shapes
from tests.registry_autoregressive import ENTRIES as AUTOREGRESSIVE_ENTRIES
from tests.registry_continuous import ENTRIES as CONTINUOUS_ENTRIES
from tests.registry_flowpp import ENTRIES as FLOWPP_ENTRIES
from tests.registry_linear import ENTRIES as LINEAR_ENTRIES
from tests.registry_neural import ENTRIES as NEURAL_ENTRIES
from tests.registry_residual import ENTRIES as RESIDUAL_ENTRIES
from tests.registry_splines import ENTRIES as SPLINE_ENTRIES
from tests.registry_variational import ENTRIES as VARIATIONAL_ENTRIES

__all__ = [
    "Case",
    "REGISTRY",
    "example",
    "example_shape",
    "glow_like",
    "make_context",
    "realnvp_vector",
]

# Feature count of the vector context given to conditional cases.
CONTEXT_FEATURES = 3
# Number of classes of the class-conditional top prior.
NUM_CLASSES = 5
# Hidden width of test conditioners: small keeps the suite fast, non-trivial keeps it honest.
HIDDEN = 8

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Case:
    """A named bijector constructor with the shapes and context it takes."""

    id: str
    build: Callable[[Shape], Bijector]
    event_shapes: st.SearchStrategy[Shape]
    batch_shapes: st.SearchStrategy[Shape] = field(default_factory=batch_shapes)
    context_shape: Shape | None = None
    # Integer class labels in [0, num_classes) as context, batch shape (B,).
    num_classes: int | None = None
    # Deep composites amplify parameter noise and wide latents through every level; these bound
    # the draws where a random perturbation would make the map ill-conditioned, not wrong.
    max_perturb: float = 0.15
    max_input_scale: float = 2.5
    # In float32 a map can only be inverted to about ulp(z) / g'(x): a perturbation that makes a
    # spline nearly flat somewhere (g' ~ 1e-5 is reachable) makes inverse(forward(x)) miss by
    # 1e-3..1e-2 whatever the algorithm, far above the float32 tolerance (which assumes g' not
    # far below 1). Cases whose conditioner amplifies the perturbation bound it here.
    float32_max_perturb: float | None = None

    @property
    def conditional(self) -> bool:
        return self.context_shape is not None or self.num_classes is not None


def make_context(
    case: Case, batch_shape: Shape, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor | None:
    """A context for ``case`` with batch shape ``batch_shape`` (None for unconditional cases)."""
    if case.num_classes is not None:
        return torch.randint(0, case.num_classes, tuple(batch_shape), generator=generator)
    if case.context_shape is not None:
        shape = tuple(batch_shape) + tuple(case.context_shape)
        return torch.randn(shape, generator=generator, dtype=dtype)
    return None


def example_shape(case: Case) -> Shape:
    """A fixed event shape from the case's strategy (the same on every run)."""
    fixed = settings(phases=[Phase.generate], database=None, derandomize=True)
    return find(case.event_shapes, lambda shape: True, settings=fixed)


def example(
    case: Case,
    *,
    batch_shape: Shape = (3,),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    perturb: float = 0.05,
) -> tuple[Bijector, Tensor, Tensor | None]:
    """A built bijector in ``dtype`` with an input from its domain and a context, ready to use.

    Zero-initialised layers are perturbed by ``perturb`` and ActNorm layers initialised on the
    input, as ``check_bijector`` does, so that no part is the identity.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    event_shape = example_shape(case)
    bijector = case.build(event_shape).to(dtype)
    unconstrained = torch.randn(tuple(batch_shape) + event_shape, generator=generator, dtype=dtype)
    x = transform_to(bijector.domain)(unconstrained)
    context = make_context(case, batch_shape, generator, dtype)
    with torch.no_grad():
        for parameter in bijector.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(perturb * noise)
    if any(isinstance(m, DataDependentInit) for m in bijector.modules()):
        initialize(bijector, x, context)
    return bijector, x, context


# --- event shape strategies ------------------------------------------------------------------
VECTORS = vector_shapes(2, 6)
EVEN_VECTORS = st.integers(1, 3).map(lambda k: (2 * k,))
IMAGES = image_shapes(st.sampled_from([2, 4]), min_size=2, max_size=4)
ODD_CHANNEL_IMAGES = image_shapes(st.sampled_from([1, 3]), min_size=2, max_size=4)
ANY_IMAGES = image_shapes(st.sampled_from([1, 2, 3]), min_size=2, max_size=4)
SQUEEZED_IMAGES = image_shapes(st.sampled_from([4, 8]), min_size=1, max_size=3, multiple_of=1)
# Multiples of 8: the top level then has 2x2 positions for its ActNorm to initialise from.
GLOW_IMAGES = image_shapes(st.sampled_from([1, 2]), min_size=8, max_size=8, multiple_of=8)
SMALL_EVENTS = st.sampled_from([(3,), (2, 3), (2, 1, 2)])
# ActNorm initialises from the batch: it needs two values per channel even where it sees one
# position per event (vectors, Glow's top level at 1x1).
TWO_OR_MORE = st.lists(st.integers(2, 3), min_size=1, max_size=2).map(tuple)
ONE_DIM_TWO_OR_MORE = st.integers(2, 3).map(lambda b: (b,))


# --- conditioners and priors used by the cases -----------------------------------------------
class ContextConvPrior(nn.Module):
    """Split prior of FactorOut that also reads a context vector: conv(h) + linear(context)."""

    def __init__(self, in_channels: int, out_channels: int, context_features: int) -> None:
        super().__init__()
        self.conv = EdgeConv2d(in_channels, out_channels, 3, bias=True)
        self.embed = nn.Linear(context_features, out_channels)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("ContextConvPrior expects a context, got None")
        return self.conv(h) + self.embed(context)[..., None, None]


def tanh_log_scale(h: Tensor) -> Tensor:
    """A custom scale function: log-scale bounded in (-1, 1)."""
    return torch.tanh(h)


def _glow_net(in_channels: int, out_channels: int) -> GlowConditioner:
    return GlowConditioner(in_channels, out_channels, hidden_channels=HIDDEN)


def _split_coupling(shape: Shape, **options) -> AffineCoupling:
    channels = shape[0]
    kept = channels // 2
    return AffineCoupling(_glow_net(kept, 2 * (channels - kept)), channel_mask(channels), **options)


def _vector_coupling(shape: Shape, context: bool = False, **options) -> AffineCoupling:
    features = shape[0]
    kept = features // 2
    net = MLP(
        kept,
        2 * (features - kept),
        (HIDDEN,),
        context_features=CONTEXT_FEATURES if context else None,
        activation=nn.Tanh,
    )
    return AffineCoupling(net, channel_mask(features, event_rank=1), **options)


def _strided_coupling(shape: Shape) -> AffineCoupling:
    channels = shape[0]
    mask = (torch.arange(channels) % 2 == 1).reshape(channels, 1, 1)
    kept = int(mask.sum())
    return AffineCoupling(_glow_net(kept, 2 * (channels - kept)), mask, scale_fn="exp")


def _checkerboard_coupling(shape: Shape) -> AffineCoupling:
    channels, height, width = shape
    return AffineCoupling(
        _glow_net(channels, 2 * channels), checkerboard_mask(height, width), scale_fn="softplus"
    )


def _factor_out(shape: Shape, prior: str) -> FactorOut:
    channels = shape[0]
    kept = channels // 2
    if prior == "none":
        net = None
    elif prior == "conv":
        net = ZeroConv2d(kept, 2 * (channels - kept))
    else:
        net = ContextConvPrior(kept, 2 * (channels - kept), CONTEXT_FEATURES)
    return FactorOut(shape, InvertibleConv1x1(kept), net)


def _vector_factor_out(shape: Shape) -> FactorOut:
    features = shape[0]
    kept = features // 2
    inner = Affine((kept,), event_rank=1)
    return FactorOut(shape, inner, MLP(kept, 2 * (features - kept), (HIDDEN,)))


def glow_like(
    shape: Shape, *, num_classes: int | None = None, memory_saving: bool = False
) -> Compose:
    """Two Glow levels: squeeze, ActNorm, 1x1 conv, affine coupling, split prior, learned top.

    Spatial sizes must be multiples of 4 (8 for the top ActNorm to see more than one position).
    """
    channels, height, width = shape
    c1 = 4 * channels
    kept = c1 // 2
    c2 = 4 * kept

    def step(c: int) -> list[Bijector]:
        return [
            ActNorm(c),
            InvertibleConv1x1(c),
            AffineCoupling(_glow_net(c // 2, 2 * (c - c // 2)), channel_mask(c), shift_first=True),
        ]

    top_prior = GlowTopPrior(c2, (height // 4, width // 4), num_classes=num_classes)
    top = Compose(Squeeze(), *step(c2), Standardize(top_prior, c2))
    split_prior = ZeroConv2d(kept, 2 * (c1 - kept))
    return Compose(
        Squeeze(),
        *step(c1),
        FactorOut((c1, height // 2, width // 2), top, split_prior),
        memory_saving=memory_saving,
    )


def realnvp_vector(shape: Shape, *, context: bool = False) -> Compose:
    """ActNorm, two affine couplings with a reversal between them, on vectors."""
    features = shape[0]
    return Compose(
        ActNorm(features, event_rank=1),
        _vector_coupling(shape, context=context, scale_fn="exp"),
        Permute.reverse(features),
        _vector_coupling(shape, context=context),
    )


def _elementwise_chain(shape: Shape) -> Compose:
    return Compose(
        Affine(shape, shift=0.2, scale=0.5, event_rank=len(shape)),
        Sigmoid(),
        Logit(),
        LeakyReLU(0.3),
        Affine(scale=0.5),
        Tanh(),
    )


def _fixed_conv1x1(shape: Shape) -> AffineConv1x1:
    generator = torch.Generator().manual_seed(shape[0])
    channels = shape[0]
    weight = torch.eye(channels) + 0.3 * torch.randn(channels, channels, generator=generator)
    return AffineConv1x1(weight, torch.randn(channels, generator=generator))


def _roll(features: int) -> list[int]:
    return list(range(1, features)) + [0]


REGISTRY: list[Case] = [
    # Elementwise.
    Case("affine-scalar", lambda s: Affine(shift=0.3, scale=0.7), SMALL_EVENTS),
    Case("affine-vector", lambda s: Affine(s, event_rank=1), VECTORS),
    Case(
        "affine-image-channels",
        lambda s: Affine((s[0], 1, 1), scale=2.0, event_rank=3),
        ANY_IMAGES,
    ),
    Case("exp", lambda s: Exp(), SMALL_EVENTS),
    Case("sigmoid", lambda s: Sigmoid(event_rank=1), VECTORS),
    Case("logit", lambda s: Logit(), SMALL_EVENTS),
    Case("logit-alpha", lambda s: Logit(0.05, event_rank=1), VECTORS),
    Case("tanh", lambda s: Tanh(), SMALL_EVENTS),
    Case("softplus", lambda s: Softplus(event_rank=1), VECTORS),
    Case("leaky-relu", lambda s: LeakyReLU(0.2), SMALL_EVENTS),
    Case("leaky-relu-rank2", lambda s: LeakyReLU(3.0, event_rank=2), st.just((2, 3))),
    # Normalisation and linear maps.
    Case("actnorm-image", lambda s: ActNorm(s[0]), ANY_IMAGES),
    Case("actnorm-vector", lambda s: ActNorm(s[0], event_rank=1), VECTORS, TWO_OR_MORE),
    Case("conv1x1-lu", lambda s: InvertibleConv1x1(s[0]), ANY_IMAGES),
    Case("conv1x1-dense", lambda s: InvertibleConv1x1(s[0], lu=False), ANY_IMAGES),
    Case("affine-conv1x1-fixed", _fixed_conv1x1, ANY_IMAGES),
    Case("permute-given", lambda s: Permute(_roll(s[0])), VECTORS),
    Case("permute-reverse", lambda s: Permute.reverse(s[0]), VECTORS),
    Case("permute-shuffle-image", lambda s: Permute.shuffle(s[0], seed=3, event_rank=3), IMAGES),
    # Couplings.
    Case("affine-coupling-glow", _split_coupling, IMAGES),
    Case(
        "affine-coupling-glow-shift-first",
        lambda s: _split_coupling(s, shift_first=True),
        IMAGES,
    ),
    Case("affine-coupling-strided-mask-exp", _strided_coupling, IMAGES),
    Case("affine-coupling-checkerboard-softplus", _checkerboard_coupling, ANY_IMAGES),
    Case("affine-coupling-mlp-sigmoid", _vector_coupling, VECTORS),
    Case("affine-coupling-mlp-exp", lambda s: _vector_coupling(s, scale_fn="exp"), VECTORS),
    Case(
        "affine-coupling-mlp-softplus-shift-first",
        lambda s: _vector_coupling(s, scale_fn="softplus", shift_first=True),
        VECTORS,
    ),
    Case(
        "affine-coupling-mlp-custom-scale",
        lambda s: _vector_coupling(s, scale_fn=tanh_log_scale),
        VECTORS,
    ),
    Case(
        "affine-coupling-mlp-context",
        lambda s: _vector_coupling(s, context=True),
        VECTORS,
        context_shape=(CONTEXT_FEATURES,),
    ),
    Case(
        "additive-coupling-glow",
        lambda s: AdditiveCoupling(_glow_net(s[0] // 2, s[0] - s[0] // 2), channel_mask(s[0])),
        IMAGES,
    ),
    Case(
        "additive-coupling-mlp-flipped",
        lambda s: AdditiveCoupling(
            MLP(s[0] - s[0] // 2, s[0] // 2, (HIDDEN,)),
            channel_mask(s[0], event_rank=1, flip=True),
        ),
        VECTORS,
    ),
    # Reshaping.
    Case("squeeze", lambda s: Squeeze(), ANY_IMAGES),
    Case(
        "squeeze-factor-3",
        lambda s: Squeeze(3),
        image_shapes(st.just(1), min_size=3, max_size=6, multiple_of=3),
    ),
    Case("patchify", lambda s: Patchify(2), st.just((2, 4, 4))),
    Case("patchify-wide", lambda s: Patchify(2, image_width=6), st.just((1, 4, 6))),
    Case("reshape", lambda s: Reshape(s, (s[0] // 2, 2)), EVEN_VECTORS),
    Case("flatten", lambda s: Flatten(s), ANY_IMAGES),
    # Multi-scale.
    Case("factor-out-no-prior", lambda s: _factor_out(s, "none"), IMAGES),
    Case("factor-out-conv-prior", lambda s: _factor_out(s, "conv"), IMAGES),
    Case(
        "factor-out-context-prior",
        lambda s: _factor_out(s, "context"),
        IMAGES,
        context_shape=(CONTEXT_FEATURES,),
    ),
    Case("factor-out-vector", _vector_factor_out, VECTORS),
    Case(
        "standardize-learned-top",
        lambda s: Standardize(GlowTopPrior(s[0], s[1:]), s[0]),
        ANY_IMAGES,
    ),
    Case(
        "standardize-class-conditional",
        lambda s: Standardize(GlowTopPrior(s[0], s[1:], num_classes=NUM_CLASSES), s[0]),
        ANY_IMAGES,
        num_classes=NUM_CLASSES,
    ),
    # Compositions and inverses.
    Case(
        "compose-glow-like",
        glow_like,
        GLOW_IMAGES,
        ONE_DIM_TWO_OR_MORE,
        max_perturb=0.05,
        max_input_scale=1.0,
    ),
    Case(
        "compose-glow-like-class-conditional",
        lambda s: glow_like(s, num_classes=NUM_CLASSES),
        st.just((1, 8, 8)),
        ONE_DIM_TWO_OR_MORE,
        num_classes=NUM_CLASSES,
        max_perturb=0.05,
        max_input_scale=1.0,
    ),
    Case(
        "compose-glow-like-memory-saving",
        lambda s: glow_like(s, memory_saving=True),
        st.just((1, 8, 8)),
        ONE_DIM_TWO_OR_MORE,
        max_perturb=0.05,
        max_input_scale=1.0,
    ),
    Case("compose-realnvp-vector", realnvp_vector, VECTORS, TWO_OR_MORE),
    Case(
        "compose-realnvp-vector-context",
        lambda s: realnvp_vector(s, context=True),
        VECTORS,
        TWO_OR_MORE,
        context_shape=(CONTEXT_FEATURES,),
    ),
    Case("compose-elementwise-chain", _elementwise_chain, VECTORS),
    Case("compose-empty", lambda s: Compose(), SMALL_EVENTS),
    Case("inverse-sigmoid", lambda s: Inverse(Sigmoid()), SMALL_EVENTS),
    Case("inverse-coupling", lambda s: Inverse(_vector_coupling(s, scale_fn="exp")), VECTORS),
    Case("inverse-squeeze", lambda s: Inverse(Squeeze()), SQUEEZED_IMAGES),
    # torch.distributions transforms.
    Case("transform-exp", lambda s: from_transform(T.ExpTransform()), SMALL_EVENTS),
    Case("transform-affine", lambda s: from_transform(T.AffineTransform(0.3, -1.7)), SMALL_EVENTS),
    Case("transform-sigmoid", lambda s: from_transform(T.SigmoidTransform()), SMALL_EVENTS),
    Case(
        "transform-compose",
        lambda s: from_transform(
            T.ComposeTransform(
                [T.AffineTransform(0.5, 2.0), T.ExpTransform(), T.PowerTransform(0.5)]
            )
        ),
        SMALL_EVENTS,
    ),
    Case(
        "transform-independent-exp",
        lambda s: from_transform(T.IndependentTransform(T.ExpTransform(), 1)),
        VECTORS,
    ),
    Case(
        "transform-reshape",
        lambda s: from_transform(T.ReshapeTransform(s, (2, s[0] // 2))),
        EVEN_VECTORS,
    ),
]

# Dense vector linear maps, batch normalisation, autoregressive, spline, variational-inference
# and Flow++ bijectors, whose constructors take fixed shapes.
REGISTRY += [
    Case(
        case_id,
        lambda shape, make=make: make(),
        st.just(event_shape),
        context_shape=context,
        **(options[0] if options else {}),
    )
    for case_id, make, event_shape, context, *options in LINEAR_ENTRIES
    + AUTOREGRESSIVE_ENTRIES
    + VARIATIONAL_ENTRIES
    + FLOWPP_ENTRIES
    + NEURAL_ENTRIES
    + CONTINUOUS_ENTRIES
    + RESIDUAL_ENTRIES
    + SPLINE_ENTRIES
]
