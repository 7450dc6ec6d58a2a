"""Glow (Kingma & Dhariwal 2018), built from flowkit's bijectors as the official code builds it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit._checks import (
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_LEVELS,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_SEED,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Bijector,
    Compose,
    FactorOut,
    Flatten,
    InvertibleConv1x1,
    Permute,
    Squeeze,
    Standardize,
    channel_mask,
)
from flowkit.distributions import AuxiliaryLoss, Distribution, Flow, StandardNormal
from flowkit.nn import GlowConditioner, GlowTopPrior, ZeroConv2d
from flowkit.presets._construction import build_seeded, check_parameter_count

__all__ = [
    "COUPLINGS",
    "GlowConfig",
    "GlowFlow",
    "PERMUTATIONS",
    "build_glow",
    "class_logits",
    "config_dict",
    "glow",
    "top_latent",
]

COUPLINGS = ("affine", "additive")
PERMUTATIONS = ("conv1x1_lu", "conv1x1", "reverse", "shuffle")


@dataclass(frozen=True)
class GlowConfig:
    """Hyper-parameters of the Glow model; each default follows the official code (openai/glow).

    Attributes:
        K: Steps of flow per level (``--depth``; 32 for CIFAR-10 in the paper's Table 4).
        L: Levels of the multi-scale architecture (``--n_levels``; 3 for CIFAR-10).
        coupling: ``"affine"`` (``--flow_coupling 1``, used for the paper's likelihood results) or
            ``"additive"`` (``0``, the official default, used for the 5-bit qualitative models).
        input_shape: Image shape ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2**L``.
        hidden_channels: Width of the coupling networks (``--width``, 512).
        permutation: ``"conv1x1_lu"`` (the paper's LU-decomposed 1x1 convolution),
            ``"conv1x1"`` (dense, the official code's default), ``"reverse"`` or ``"shuffle"``.
        learn_top: Learn the top prior's mean and scale (``--learntop``, used in the official
            CIFAR-10 command).
        num_classes: Classes for a class-conditional model (``--ycond``): a class-dependent top
            prior and a classifier head on the top latent. None for an unconditional model.
        class_weight: Weight of the classifier's cross-entropy (in bits) in the objective
            (``--weight_y``; 0.01 for the paper's class-conditional samples).
        edge_bias: Glow's edge channel in the 3x3 convolutions (official default on).
        channels_last: Run the coupling networks in channels-last memory layout (our choice: about
            twice as fast for oneDNN's convolutions on CPUs; the model's function is unchanged).
        conditioner_dtype: ``"bfloat16"`` runs the coupling networks under bfloat16 autocast while
            the flow, its log-determinants and priors stay in float32 (None: float32 throughout).
        memory_saving: Train each level's chain of steps with invertible backpropagation, so
            activation memory does not grow with ``K`` (the official code used gradient
            checkpointing instead).
        seed: Seed of the random rotations of the 1x1 convolutions and of the shuffles (None draws
            from torch's global generator).
    """

    K: int = 32
    L: int = 3
    coupling: str = "affine"
    input_shape: tuple[int, int, int] = (3, 32, 32)
    hidden_channels: int = 512
    permutation: str = "conv1x1_lu"
    learn_top: bool = True
    num_classes: int | None = None
    class_weight: float = 0.01
    edge_bias: bool = True
    channels_last: bool = True
    conditioner_dtype: str | None = None
    memory_saving: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "GlowConfig"
        check_int(owner, "K", self.K, 1, MAX_STEPS)
        check_int(owner, "L", self.L, 1, MAX_LEVELS)
        check_choice(owner, "coupling", self.coupling, COUPLINGS)
        shape = check_shape(
            owner,
            "input_shape",
            self.input_shape,
            rank=3,
            maximum=MAX_IMAGE_SIZE,
            labels="(C, H, W)",
        )
        # A tuple whatever sequence came (a list from a JSON checkpoint), so that configs compare.
        object.__setattr__(self, "input_shape", shape)
        check_int(owner, "hidden_channels", self.hidden_channels, 1, MAX_WIDTH)
        check_choice(owner, "permutation", self.permutation, PERMUTATIONS)
        for name in ("learn_top", "edge_bias", "channels_last", "memory_saving"):
            check_bool(owner, name, getattr(self, name))
        check_int(owner, "num_classes", self.num_classes, 2, MAX_CLASSES, optional=True)
        check_float(owner, "class_weight", self.class_weight, 0.0)
        check_choice(
            owner, "conditioner_dtype", self.conditioner_dtype, (None, "bfloat16", "float16")
        )
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        _, height, width = shape
        factor = 2**self.L
        if height % factor or width % factor:
            raise ValueError(
                f"Glow with L={self.L} levels halves the image size {self.L} times, so height and "
                f"width must be divisible by {factor}; got {height}x{width}"
            )
        check_parameter_count(
            owner,
            _parameter_count(self),
            f"K={self.K}, L={self.L}, hidden_channels={self.hidden_channels}, "
            f"input_shape={shape}, num_classes={self.num_classes}",
        )


def _parameter_count(config: GlowConfig) -> int:
    """Estimate (within a factor of two) of the parameters of the model ``config`` describes."""
    channels, height, width = config.input_shape
    hidden = config.hidden_channels
    count = 0
    for level in range(config.L):
        channels, height, width = channels * 4, height // 2, width // 2
        kept = channels // 2
        out = (2 if config.coupling == "affine" else 1) * (channels - kept)
        # ActNorm, 1x1 convolution, conditioner (3x3, 1x1 with ActNorms, zero-initialised 3x3).
        step = 2 * channels + channels**2 + 9 * (kept + 1) * hidden + hidden**2 + 4 * hidden
        count += config.K * (step + 9 * (hidden + 1) * out + 2 * out)
        if level < config.L - 1:
            count += 9 * (kept + 1) * 2 * (channels - kept)
            channels = kept
    # The top prior's mean and scale maps, and the class-conditional prior and classifier.
    count += 9 * (channels + 1) * 2 * channels + 2 * channels * height * width
    count += 3 * (config.num_classes or 0) * channels
    return count


def glow(
    K: int = 32,
    L: int = 3,
    coupling: str = "affine",
    *,
    input_shape: Sequence[int] = (3, 32, 32),
    hidden_channels: int = 512,
    permutation: str = "conv1x1_lu",
    learn_top: bool = True,
    num_classes: int | None = None,
    class_weight: float = 0.01,
    edge_bias: bool = True,
    channels_last: bool = True,
    conditioner_dtype: str | None = None,
    memory_saving: bool = False,
    seed: int | None = None,
) -> Flow:
    r"""The Glow model: ``L`` levels of ``K`` steps of flow, as the official code builds it.

    The bijector is: squeeze; then per level ``K`` steps of [:class:`ActNorm`, invertible 1x1
    convolution (or a permutation), affine or additive coupling with :class:`GlowConditioner`];
    between levels a :class:`FactorOut` whose Gaussian prior comes from a zero-initialised 3x3
    convolution of the kept half (``split2d``), followed by the next level's squeeze; on top, a
    learned (optionally class-conditional) Gaussian as :class:`Standardize` with
    :class:`GlowTopPrior`. The base is :math:`N(0, I)` on the flat latent. Couplings shift before
    scaling with scale :math:`\sigma(h + 2)`, and parameters are interleaved, exactly as the
    official ``revnet2d_step``.

    Args are the fields of :class:`GlowConfig`, where each default and its source is documented.

    Returns:
        A :class:`~flowkit.Flow` over images of shape ``input_shape`` with values in
        :math:`[-1/2, 1/2]` (see ``flowkit.data``). Class-conditional models take integer labels as
        context (``context_shape == ()``). The result is a :class:`GlowFlow`, which carries its
        config as ``flow.config``.

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions (2018);
        the official implementation, github.com/openai/glow.

    Example:
        >>> flow = glow(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16)
        >>> flow.log_prob(torch.rand(3, 1, 8, 8) - 0.5).shape
        torch.Size([3])
    """
    config = GlowConfig(
        K=K,
        L=L,
        coupling=coupling,
        input_shape=input_shape,  # type: ignore[arg-type]
        hidden_channels=hidden_channels,
        permutation=permutation,
        learn_top=learn_top,
        num_classes=num_classes,
        class_weight=class_weight,
        edge_bias=edge_bias,
        channels_last=channels_last,
        conditioner_dtype=conditioner_dtype,
        memory_saving=memory_saving,
        seed=seed,
    )
    return build_glow(config)


def build_glow(config: GlowConfig) -> Flow:
    """Build the Glow :class:`~flowkit.Flow` described by ``config`` (see :func:`glow`).

    With ``config.seed`` set, every initial weight is drawn from that seed (torch's global random
    state is saved and restored around the construction), so the same config gives the same model.
    """
    bijector = build_seeded(
        config.seed, lambda generator: _level(config, tuple(config.input_shape), 0, generator)
    )
    channels, height, width = config.input_shape
    return GlowFlow(StandardNormal((channels * height * width,)), bijector, config)


class GlowFlow(Flow):
    """The :class:`~flowkit.Flow` that :func:`glow` returns, with Glow's two training-time hooks.

    * :meth:`auxiliary_loss`: a class-conditional model (``config.num_classes``) adds the
      official code's auxiliary classifier on the top latent, its cross-entropy in bits weighted
      by ``config.class_weight`` (``--weight_y``), and reports ``class_bits`` and
      ``class_accuracy`` per example.
    * :meth:`for_inference`: a copy with every ActNorm folded into its neighbouring linear map
      (:func:`flowkit.performance.fuse_for_inference`).

    Attributes:
        config: The :class:`GlowConfig` the model was built from.
    """

    config: GlowConfig

    def __init__(self, base: Distribution, bijector: Bijector, config: GlowConfig) -> None:
        super().__init__(base, bijector, num_classes=config.num_classes)
        self.config = config

    def auxiliary_loss(self, z: Tensor, context: Tensor | None) -> AuxiliaryLoss | None:
        """The class-prediction loss of a class-conditional Glow (None for an unconditional one)."""
        if self.config.num_classes is None or context is None:
            return None
        logits = class_logits(self, z, context)
        labels = context.long()
        class_bits = F.cross_entropy(logits, labels, reduction="none") / math.log(2.0)
        accuracy = (logits.argmax(-1) == labels).to(class_bits.dtype)
        return AuxiliaryLoss(
            self.config.class_weight * class_bits.mean(),
            {"class_bits": class_bits, "class_accuracy": accuracy},
        )

    def for_inference(self) -> Flow:
        """A frozen copy with ActNorm folded into the neighbouring convolutions."""
        from flowkit.performance import fuse_for_inference

        fused = fuse_for_inference(self)
        assert isinstance(fused, Flow)
        return fused


def _seed(generator: torch.Generator | None) -> int | None:
    if generator is None:
        return None
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _step(config: GlowConfig, channels: int, generator: torch.Generator | None) -> list[Bijector]:
    if config.permutation == "conv1x1_lu":
        mixing: Bijector = InvertibleConv1x1(channels, lu=True, seed=_seed(generator))
    elif config.permutation == "conv1x1":
        mixing = InvertibleConv1x1(channels, lu=False, seed=_seed(generator))
    elif config.permutation == "reverse":
        mixing = Permute.reverse(channels, event_rank=3)
    else:
        mixing = Permute.shuffle(channels, seed=_seed(generator) or 0, event_rank=3)
    kept = channels // 2
    transformed = channels - kept
    dtype = None if config.conditioner_dtype is None else getattr(torch, config.conditioner_dtype)
    if config.coupling == "affine":
        coupling: Bijector = AffineCoupling(
            GlowConditioner(
                kept,
                2 * transformed,
                config.hidden_channels,
                edge_bias=config.edge_bias,
                channels_last=config.channels_last,
                compute_dtype=dtype,
            ),
            channel_mask(channels),
            scale_fn="sigmoid",
            shift_first=True,
        )
    else:
        coupling = AdditiveCoupling(
            GlowConditioner(
                kept,
                transformed,
                config.hidden_channels,
                edge_bias=config.edge_bias,
                channels_last=config.channels_last,
                compute_dtype=dtype,
            ),
            channel_mask(channels),
        )
    return [ActNorm(channels), mixing, coupling]


def _level(
    config: GlowConfig, shape: tuple[int, ...], level: int, generator: torch.Generator | None
) -> Bijector:
    channels, height, width = shape
    channels, height, width = channels * 4, height // 2, width // 2
    steps: list[Bijector] = []
    for _ in range(config.K):
        steps += _step(config, channels, generator)
    chain = Compose(steps, memory_saving=config.memory_saving)
    if level == config.L - 1:
        parts: list[Bijector] = [Squeeze(), chain]
        if config.learn_top or config.num_classes is not None:
            prior = GlowTopPrior(
                channels,
                (height, width),
                num_classes=config.num_classes,
                learn_top=config.learn_top,
                edge_bias=config.edge_bias,
            )
            parts.append(Standardize(prior, channels))
        if config.L == 1:
            parts.append(Flatten((channels, height, width)))
        return Compose(parts)
    kept = channels // 2
    inner = _level(config, (kept, height, width), level + 1, generator)
    split_prior = ZeroConv2d(kept, 2 * (channels - kept), 3, edge_bias=config.edge_bias)
    return Compose([Squeeze(), chain, FactorOut((channels, height, width), inner, split_prior)])


def _top_standardize(flow: Flow) -> tuple[Standardize, GlowTopPrior]:
    tops = [
        (module, module.prior)
        for module in flow.bijector.modules()
        if isinstance(module, Standardize) and isinstance(module.prior, GlowTopPrior)
    ]
    if not tops:
        raise ValueError("the flow has no Glow top prior (build it with learn_top or num_classes)")
    return tops[-1]


def top_latent(flow: Flow, z: Tensor, context: Tensor | None = None) -> Tensor:
    """The top-level latent of a Glow before its prior standardises it, from the flat latent ``z``.

    This is the official code's ``z`` at the top, which the classifier head reads.
    """
    top, _ = _top_standardize(flow)
    eps_top = flow.unflatten(z)[-1]
    z_top, _ = top.inverse(eps_top, context)
    return z_top


def class_logits(flow: Flow, z: Tensor, context: Tensor | None = None) -> Tensor:
    """Logits of Glow's auxiliary classifier (mean-pooled top latent, zero-initialised map)."""
    _, prior = _top_standardize(flow)
    return prior.class_logits(top_latent(flow, z, context))


def config_dict(config: GlowConfig) -> dict:
    """The config as a plain dict tagged ``kind="glow"`` (stored in checkpoints by the trainer)."""
    return {"kind": "glow", **dataclasses.asdict(config)}
