"""Flow++ (Ho et al. 2019): logistic-mixture couplings, conv-attn networks, learned dequantizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from flowkit._checks import (
    MAX_IMAGE_SIZE,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_SEED,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import (
    ActNorm,
    Affine,
    Bijector,
    CheckerboardSplit,
    Compose,
    Coupling,
    Flatten,
    InvertibleConv1x1,
    LogisticMixtureCDF,
    LogisticToNormal,
    Logit,
    Split,
    SplitApply,
    Squeeze,
    SwapHalves,
    channel_mask,
)
from flowkit.bijectors.splits import ChannelSplit
from flowkit.distributions import Dequantized, Flow, StandardNormal, VariationalDequantizer
from flowkit.distributions.dequantized import check_bits
from flowkit.nn import CheckerboardFeatures, ConvAttn, GatedConvNet
from flowkit.presets._construction import build_seeded, check_parameter_count
from flowkit.presets.flowpp_count import flowpp_parameter_count

__all__ = [
    "FlowPPConfig",
    "build_flowpp",
    "flowpp",
    "flowpp_parameter_count",
]

# The official code maps pixels to [0.05, 0.95] before the logit (its ``ImgProc``).
FLOWPP_LOGIT_ALPHA = 0.05
# Most mixture components per element; the paper uses 32 (CIFAR-10) and 4 to 32 elsewhere.
MAX_COMPONENTS = 4096
# The official Pointwise starts at the identity plus Gaussian noise of this standard deviation.
POINTWISE_INIT_NOISE = 0.001
# The choices of each architecture option, the official code's first.
SPLITS = ("columns", "checkerboard")
NORMS = ("position", "channel")
MIXINGS = ("halves", "whole")
SQUEEZE_ORDERS = ("position_major", "channel_major")
CONTEXT_MODES = ("blocks", "input")
FEATURE_NETWORKS = ("gated_conv", "conv_attn")
DEQUANTIZER_NOISES = ("gaussian", "logistic")


@dataclass(frozen=True)
class FlowPPConfig:
    """Hyper-parameters of Flow++; each default is the official CIFAR-10 model's (run_cifar.py).

    Attributes:
        input_shape: Image shape ``(C, H, W)``; ``W`` must be divisible by 4 and ``H`` by 2 (the
            squeeze halves both, and each checkerboard pairs the columns of a row).
        filters: Width of the coupling networks (96).
        components: Logistic mixture components per element (32).
        blocks: Conv-attn blocks per coupling network (10).
        heads: Attention heads (4); must divide ``filters`` and ``dequantizer_filters``.
        dropout: Dropout in the coupling networks during training (0.2).
        couplings: Couplings of the main flow: checkerboard ones on the input, channel ones after
            the squeeze, then checkerboard ones on the squeezed image (``(4, 2, 3)``).
        dequantizer_couplings: Checkerboard couplings of the dequantizer's flow (4); 0 gives
            uniform dequantization (the paper's ablation).
        dequantizer_filters: Width of the dequantizer's coupling networks (96).
        dequantizer_blocks: Conv-attn blocks per dequantizer coupling network (2).
        feature_channels: Channels of the dequantizer's image features (32).
        feature_blocks: Blocks of the network computing those features (3).
        n_bits: Bits per pixel of the images the model describes (8).
        seed: Seed of every initial weight (None draws from torch's global generator).
        tanh_scale: Bound each coupling's affine log-scale by ``tanh`` (official: True).
        split: ``"columns"``: the "checkerboard" couplings keep even, then odd columns, as the
            official ``CheckerboardSplit`` does; ``"checkerboard"``: a true checkerboard.
        norm: ``"position"``: each step's normalisation has a scale and shift per channel and
            position (the official ``Norm``); ``"channel"``: per channel (Glow's ActNorm).
        mixing: ``"halves"``: each step mixes the channels of the two halves of its coupling's
            split by two unconstrained 1x1 convolutions (the official ``Pointwise``);
            ``"whole"``: one LU-factored 1x1 convolution over all channels (Glow's).
        squeeze_order: Channel layout of the squeeze: ``"position_major"`` is TensorFlow's
            ``space_to_depth`` (official); ``"channel_major"`` is ``pixel_unshuffle``.
        context_mode: Where the dequantizer's couplings take the image features:
            ``"blocks"``, projected into every block (official; with ``dequantizer_blocks=0``
            the features then reach no coupling), or ``"input"``, concatenated to the network's
            input.
        feature_network: The dequantizer's feature network: ``"gated_conv"``, a 3x3 convolution
            and ``feature_blocks`` gated residual convolutions (official), or ``"conv_attn"``, a
            :class:`~flowkit.nn.ConvAttn` with attention and layer norms.
        swap_odd_stages: End a stage with an odd number of couplings by exchanging its halves
            (:class:`~flowkit.bijectors.SwapHalves`), as the official code's merge of its
            flipped tuple does (True); False merges them in place.
        dequantizer_noise: The noise the dequantizer's flow starts from: ``"gaussian"``,
            standard normal (official; a :class:`~flowkit.bijectors.LogisticToNormal` first in
            its bijector), or ``"logistic"``, the logit of the uniform noise.

    Each architecture option defaults to the official code's choice. A stored config without
    them (written before they existed) is read with :attr:`STORED_DEFAULTS`, the architecture
    it was built with.
    """

    # The architecture of configs stored before these options existed.
    STORED_DEFAULTS: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "tanh_scale": False,
            "split": "checkerboard",
            "norm": "channel",
            "mixing": "whole",
            "squeeze_order": "channel_major",
            "context_mode": "input",
            "feature_network": "conv_attn",
            "swap_odd_stages": False,
            "dequantizer_noise": "logistic",
        }
    )

    input_shape: tuple[int, int, int] = (3, 32, 32)
    filters: int = 96
    components: int = 32
    blocks: int = 10
    heads: int = 4
    dropout: float = 0.2
    couplings: tuple[int, int, int] = (4, 2, 3)
    dequantizer_couplings: int = 4
    dequantizer_filters: int = 96
    dequantizer_blocks: int = 2
    feature_channels: int = 32
    feature_blocks: int = 3
    n_bits: int = 8
    seed: int | None = None
    tanh_scale: bool = True
    split: str = "columns"
    norm: str = "position"
    mixing: str = "halves"
    squeeze_order: str = "position_major"
    context_mode: str = "blocks"
    feature_network: str = "gated_conv"
    swap_odd_stages: bool = True
    dequantizer_noise: str = "gaussian"

    def __post_init__(self) -> None:
        owner = "FlowPPConfig"
        self._check_input_shape(owner)
        self._check_sizes(owner)
        self._check_choices(owner)
        self._check_heads(owner)
        check_float(owner, "dropout", self.dropout, 0.0, 1.0, exclusive_maximum=True)
        couplings = check_shape(
            owner,
            "couplings",
            self.couplings,
            rank=3,
            minimum=0,
            maximum=MAX_STEPS,
            labels="(checkerboard, channel, checkerboard) counts",
        )
        if not sum(couplings):
            raise ValueError(f"{owner} expects at least one coupling, got couplings={couplings}")
        object.__setattr__(self, "couplings", couplings)
        check_bits(owner, self.n_bits)
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        check_parameter_count(
            owner,
            flowpp_parameter_count(self),
            f"input_shape={self.input_shape}, filters={self.filters}, blocks={self.blocks}, "
            f"components={self.components}, couplings={couplings}",
        )

    def _check_input_shape(self, owner: str) -> None:
        """``input_shape`` as a tuple (C, H, W) whose height and width Flow++'s splits pair up."""
        shape = check_shape(
            owner,
            "input_shape",
            self.input_shape,
            rank=3,
            maximum=MAX_IMAGE_SIZE,
            labels="(C, H, W)",
        )
        object.__setattr__(self, "input_shape", shape)
        _, height, width = shape
        if height % 2 or width % 4:
            raise ValueError(
                "Flow++ squeezes the image once and runs checkerboards that pair the columns of "
                f"each row before and after, so it expects a height divisible by 2 and a width "
                f"divisible by 4, got {height}x{width}"
            )

    def _check_sizes(self, owner: str) -> None:
        """The integer sizes (widths, counts, depths), each within its bounds."""
        for name, minimum in (
            ("filters", 1),
            ("components", 1),
            ("blocks", 0),
            ("heads", 1),
            ("dequantizer_couplings", 0),
            ("dequantizer_filters", 1),
            ("dequantizer_blocks", 0),
            ("feature_channels", 1),
            ("feature_blocks", 0),
        ):
            maximum = {"components": MAX_COMPONENTS, "heads": MAX_WIDTH}.get(
                name, MAX_STEPS if "blocks" in name or "couplings" in name else MAX_WIDTH
            )
            check_int(owner, name, getattr(self, name), minimum, maximum)

    def _check_choices(self, owner: str) -> None:
        """The switches are bools and the named choices among their known values."""
        for name in ("tanh_scale", "swap_odd_stages"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{owner} expects {name} as a bool, got {getattr(self, name)!r}")
        for name, choices in (
            ("split", SPLITS),
            ("norm", NORMS),
            ("mixing", MIXINGS),
            ("squeeze_order", SQUEEZE_ORDERS),
            ("context_mode", CONTEXT_MODES),
            ("feature_network", FEATURE_NETWORKS),
            ("dequantizer_noise", DEQUANTIZER_NOISES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{owner} expects {name} as one of {choices}, got {getattr(self, name)!r}"
                )

    def _check_heads(self, owner: str) -> None:
        """The attention heads divide the width of every network that attends."""
        attention_widths = ["filters", "dequantizer_filters"]
        if self.feature_network == "conv_attn":
            attention_widths.append("feature_channels")
        for name in attention_widths:
            if getattr(self, name) % self.heads:
                raise ValueError(
                    f"{owner} expects heads to divide {name}, got heads={self.heads}, "
                    f"{name}={getattr(self, name)}"
                )


def flowpp(
    input_shape: Sequence[int] = (3, 32, 32),
    *,
    filters: int = 96,
    components: int = 32,
    blocks: int = 10,
    heads: int = 4,
    dropout: float = 0.2,
    couplings: Sequence[int] = (4, 2, 3),
    dequantizer_couplings: int = 4,
    dequantizer_filters: int = 96,
    dequantizer_blocks: int = 2,
    feature_channels: int = 32,
    feature_blocks: int = 3,
    n_bits: int = 8,
    seed: int | None = None,
    tanh_scale: bool = True,
    split: str = "columns",
    norm: str = "position",
    mixing: str = "halves",
    squeeze_order: str = "position_major",
    context_mode: str = "blocks",
    feature_network: str = "gated_conv",
    swap_odd_stages: bool = True,
    dequantizer_noise: str = "gaussian",
) -> Dequantized:
    r"""Flow++: a distribution over integer images, with a learned dequantizer.

    The architecture of the official code (github.com/aravindsrinivas/flowpp, ``run_cifar.py``),
    built from library parts. The main flow maps :math:`y = (x + u) / 2^n - 1/2` to :math:`z`: the
    official logit preprocessing :math:`\mathrm{logit}(0.05 + 0.9 (y + 1/2))`, then ``couplings[0]``
    "checkerboard" couplings on ``(C, H, W)``, a squeeze to ``(4C, H/2, W/2)`` in TensorFlow's
    ``space_to_depth`` channel order, ``couplings[1]`` channel couplings and ``couplings[2]``
    checkerboard couplings; a stage with an odd number of couplings ends with its halves exchanged,
    as the official merge of its flipped tuple does. Each step is a normalisation with a scale and
    shift per channel and position (:class:`~flowkit.bijectors.ActNorm` with ``spatial_shape``), one
    unconstrained :class:`~flowkit.bijectors.InvertibleConv1x1` on each half of the coupling's split
    (:class:`~flowkit.bijectors.SplitApply`), and a :class:`~flowkit.bijectors.Coupling` whose map
    is :class:`~flowkit.bijectors.LogisticMixtureCDF` (``components`` logistics, the affine
    log-scale bounded by ``tanh``) and whose conditioner is a :class:`~flowkit.nn.ConvAttn`;
    consecutive couplings keep alternate halves. As in the official code, the "checkerboard" split
    keeps even columns, then odd ones (``split="columns"``). There is no factor-out: the base is
    :math:`N(0, I)` on the whole flattened latent.

    The dequantizer (:class:`~flowkit.distributions.VariationalDequantizer`) draws
    :math:`u \sim q(u \mid x)` from standard normal noise with its own ``dequantizer_couplings``
    steps and a sigmoid, whose conditioners
    receive, projected into every block, features of the image: its two halves stacked along
    channels (:class:`~flowkit.nn.CheckerboardFeatures`) through a 3x3 convolution and
    ``feature_blocks`` gated residual convolutions (:class:`~flowkit.nn.GatedConvNet`). With the
    CIFAR-10 defaults the model has the official 31,443,440 parameters.

    Each architecture option (``tanh_scale`` to ``dequantizer_noise``) can select an earlier
    flowkit design instead; see :class:`FlowPPConfig`. What still departs from the official
    code: initialisation (zero-initialised output layers, where the official code
    initialises every layer from data); the order of each element's mixture parameters in the
    network's output (a permutation of its output channels).

    Args are the fields of :class:`FlowPPConfig`, where each default and its source is
    documented.

    Returns:
        A :class:`~flowkit.distributions.Dequantized` over ``(C, H, W)`` integer images in
        :math:`[0, 2^n)`.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++: Improving Flow-Based Generative Models with
        Variational Dequantization and Architecture Design (ICML 2019); the official code,
        github.com/aravindsrinivas/flowpp.

    Example:
        >>> model = flowpp((1, 8, 8), filters=8, components=2, blocks=1, heads=2,
        ...                couplings=(1, 1, 1), dequantizer_couplings=1, dequantizer_filters=8,
        ...                dequantizer_blocks=1, feature_channels=4, feature_blocks=1, seed=0)
        >>> model.log_prob(torch.randint(0, 256, (2, 1, 8, 8))).shape
        torch.Size([2])
    """
    config = FlowPPConfig(
        input_shape=input_shape,  # type: ignore[arg-type]
        filters=filters,
        components=components,
        blocks=blocks,
        heads=heads,
        dropout=dropout,
        couplings=couplings,  # type: ignore[arg-type]
        dequantizer_couplings=dequantizer_couplings,
        dequantizer_filters=dequantizer_filters,
        dequantizer_blocks=dequantizer_blocks,
        feature_channels=feature_channels,
        feature_blocks=feature_blocks,
        n_bits=n_bits,
        seed=seed,
        tanh_scale=tanh_scale,
        split=split,
        norm=norm,
        mixing=mixing,
        squeeze_order=squeeze_order,
        context_mode=context_mode,
        feature_network=feature_network,
        swap_odd_stages=swap_odd_stages,
        dequantizer_noise=dequantizer_noise,
    )
    return build_flowpp(config)


def build_flowpp(config: FlowPPConfig) -> Dequantized:
    """Build the Flow++ model described by ``config`` (see :func:`flowpp`).

    With ``config.seed`` set, every initial weight is drawn from that seed (torch's global random
    state is saved and restored around the construction), so the same config gives the same model.
    """
    return build_seeded(config.seed, lambda generator: _build(config, generator))


def _build(config: FlowPPConfig, generator: torch.Generator | None) -> Dequantized:
    channels, height, width = config.input_shape
    first, middle, last = config.couplings
    parts: list[Bijector] = [Affine(shift=0.5, learnable=False), Logit(FLOWPP_LOGIT_ALPHA)]
    parts += _steps(config, (channels, height, width), first, "checkerboard", generator)
    parts.append(Squeeze(2, order=config.squeeze_order))
    squeezed = (4 * channels, height // 2, width // 2)
    parts += _steps(config, squeezed, middle, "channel", generator)
    parts += _steps(config, squeezed, last, "checkerboard", generator)
    parts.append(Flatten(squeezed))
    flow = Flow(StandardNormal((channels * height * width,)), Compose(parts))
    return Dequantized(flow, n_bits=config.n_bits, dequantizer=_dequantizer(config, generator))


def _seed(generator: torch.Generator | None) -> int | None:
    if generator is None:
        return None
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _checkerboard(config: FlowPPConfig, height: int, width: int, flip: bool) -> CheckerboardSplit:
    return CheckerboardSplit(height, width, flip=flip, alternate=config.split == "checkerboard")


def _mixing(
    config: FlowPPConfig, split: Split, channels: int, generator: torch.Generator | None
) -> Bijector:
    """The step's 1x1 convolution(s): one per half of ``split``, or one over all channels."""
    if config.mixing == "whole":
        return InvertibleConv1x1(channels, lu=True, seed=_seed(generator))
    kept, transformed = (
        (split.kept_channels, channels - split.kept_channels)
        if isinstance(split, ChannelSplit)
        else (channels, channels)
    )
    return SplitApply(
        split,
        _near_identity_conv(kept, generator),
        _near_identity_conv(transformed, generator),
    )


def _near_identity_conv(channels: int, generator: torch.Generator | None) -> InvertibleConv1x1:
    """An unconstrained 1x1 convolution started at the official ``Pointwise``'s initial value."""
    conv = InvertibleConv1x1(channels, lu=False, seed=_seed(generator))
    noise = torch.randn(channels, channels, generator=generator)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels) + POINTWISE_INIT_NOISE * noise)
    return conv


def _steps(
    config: FlowPPConfig,
    shape: tuple[int, int, int],
    count: int,
    split: str,
    generator: torch.Generator | None,
    *,
    filters: int | None = None,
    blocks: int | None = None,
    context_channels: int = 0,
) -> list[Bijector]:
    """``count`` steps of [normalisation, 1x1 convolution, coupling], the kept half alternating.

    After an odd count, with ``config.swap_odd_stages``, the halves are exchanged.
    """
    channels, height, width = shape
    mixture_params = 3 * config.components + 2
    steps: list[Bijector] = []
    first_split: Split | None = None
    for index in range(count):
        flip = index % 2 == 1
        splitter: Split
        if split == "checkerboard":
            splitter = _checkerboard(config, height, width, flip)
            kept, transformed, positions = channels, channels, (height, width // 2)
        else:
            # channel_mask keeps the first C // 2 channels, or the rest when flipped.
            splitter = ChannelSplit(channel_mask(channels, flip=flip))
            kept = splitter.kept_channels
            transformed, positions = channels - kept, (height, width)
        network = ConvAttn(
            kept,
            mixture_params * transformed,
            filters=config.filters if filters is None else filters,
            blocks=config.blocks if blocks is None else blocks,
            heads=config.heads,
            dropout=config.dropout,
            context_channels=context_channels,
            context_mode=config.context_mode,
            spatial_shape=positions,
        )
        norm = ActNorm(
            channels, spatial_shape=(height, width) if config.norm == "position" else None
        )
        steps += [
            norm,
            _mixing(config, splitter, channels, generator),
            Coupling(
                network,
                splitter,
                LogisticMixtureCDF(config.components, tanh_scale=config.tanh_scale),
            ),
        ]
        if index == 0:
            first_split = splitter
    if count % 2 and config.swap_odd_stages:
        assert first_split is not None
        steps.append(SwapHalves(first_split))
    return steps


def _dequantizer(
    config: FlowPPConfig, generator: torch.Generator | None
) -> VariationalDequantizer | None:
    if not config.dequantizer_couplings:
        return None
    channels, height, width = config.input_shape
    network: nn.Module
    if config.feature_network == "gated_conv":
        network = GatedConvNet(
            2 * channels,
            config.feature_channels,
            blocks=config.feature_blocks,
            dropout=config.dropout,
        )
    else:
        network = ConvAttn(
            2 * channels,
            config.feature_channels,
            filters=config.feature_channels,
            blocks=config.feature_blocks,
            heads=config.heads,
            dropout=config.dropout,
            zero_init=False,
        )
    features = CheckerboardFeatures(_checkerboard(config, height, width, False), network)
    steps = _steps(
        config,
        (channels, height, width),
        config.dequantizer_couplings,
        "checkerboard",
        generator,
        filters=config.dequantizer_filters,
        blocks=config.dequantizer_blocks,
        context_channels=config.feature_channels,
    )
    if config.dequantizer_noise == "gaussian":
        steps.insert(0, LogisticToNormal(event_rank=3))
    return VariationalDequantizer(Compose(steps), features)
