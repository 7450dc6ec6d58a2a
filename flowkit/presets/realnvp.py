"""RealNVP's multi-scale image model (Dinh et al. 2017), assembled from library bijectors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from flowkit._checks import (
    MAX_IMAGE_SIZE,
    MAX_LEVELS,
    MAX_STEPS,
    MAX_WIDTH,
    check_bool,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import (
    Affine,
    AffineCoupling,
    BatchNorm,
    Bijector,
    Compose,
    FactorOut,
    Flatten,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from flowkit.distributions import Flow, StandardNormal
from flowkit.nn import MaskedInput, ResNet, ScaledTanh
from flowkit.presets._construction import check_parameter_count

__all__ = ["RealNVPConfig", "build_realnvp", "realnvp", "realnvp_levels"]

# The official code caps CIFAR-10/ImageNet 32x32 models at 4 scales.
MAX_DEFAULT_LEVELS = 4
# RealNVP's data constraint 0.9 leaves this margin at both ends of [0, 1] before the logit.
REALNVP_LOGIT_ALPHA = 0.05


def realnvp_levels(input_shape: Sequence[int]) -> int:
    """Default number of scales for ``input_shape``: as many as fit, at most 4.

    Each scale but the last halves the height and width (so both must be even), and the last
    scale's checkerboard needs at least two pixels. ``(3, 32, 32)`` gets 4 (the last at 4x4),
    ``(1, 28, 28)`` gets 3 (28 -> 14 -> 7).
    """
    _, height, width = _check_shape(input_shape)
    levels = 1
    while (
        levels < MAX_DEFAULT_LEVELS
        and height % 2 == 0
        and width % 2 == 0
        and ((height // 2) * (width // 2) >= 2)
    ):
        height, width, levels = height // 2, width // 2, levels + 1
    return levels


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    return check_shape(  # type: ignore[return-value]
        "realnvp", "input_shape", input_shape, rank=3, maximum=MAX_IMAGE_SIZE, labels="(C, H, W)"
    )


def _parameter_count(
    shape: tuple[int, int, int], levels: int, hidden_channels: int, blocks: int
) -> int:
    """Estimate (within a factor of two) of the parameters of the model these values describe."""
    channels = shape[0]
    count = 0
    for scale in range(levels):
        width = hidden_channels * 2**scale
        # Each coupling's ResNet: 3x3 convolutions in and out, two 3x3 convolutions per block.
        checkerboard = 9 * width * (channels + 1 + 2 * channels) + 18 * blocks * width**2
        if scale == levels - 1:
            count += 4 * checkerboard
            break
        wide = 2 * width
        channel = 9 * wide * (2 * channels + 4 * channels) + 18 * blocks * wide**2
        count += 3 * checkerboard + 3 * channel
        channels *= 2
    return count


def realnvp(
    input_shape: Sequence[int] = (3, 32, 32),
    *,
    levels: int | None = None,
    hidden_channels: int = 32,
    blocks: int = 4,
    weight_norm: bool = True,
    batch_norm: bool = False,
    logit_alpha: float | None = REALNVP_LOGIT_ALPHA,
) -> Flow:
    r"""RealNVP's multi-scale flow for images, as a :class:`~flowkit.Flow` over ``input_shape``.

    Each of the first ``levels - 1`` scales on an input of shape ``(C, H, W)`` applies

    1. three affine couplings with alternating checkerboard masks (``(C, H, W)``),
    2. a squeeze to ``(4C, H/2, W/2)``,
    3. three affine couplings with alternating channel masks,
    4. a :class:`~flowkit.bijectors.FactorOut` that keeps the first ``2C`` channels for the next
       scale and factors the other half out under :math:`N(0, I)` (``prior=None``).

    The last scale applies four checkerboard couplings, and a final
    :class:`~flowkit.bijectors.Flatten` makes the latent one vector under a standard normal base.
    Each coupling computes :math:`z_b = x_b \odot e^{a \tanh(h)} + t` with
    :math:`(t, h) = \mathrm{ResNet}(x_a)` (:class:`~flowkit.nn.ResNet`, zero-initialised output)
    and a learned per-channel range :math:`a` (:class:`~flowkit.nn.ScaledTanh`). Checkerboard
    networks also receive the mask as an input channel (:class:`~flowkit.nn.MaskedInput`), as in
    the official code. As there, networks are ``hidden_channels * 2**s`` wide at scale :math:`s`
    (twice that for the channel couplings, which see four times the channels).

    With ``logit_alpha`` set, the data (expected in :math:`[-1/2, 1/2]`, flowkit's image range)
    first go through RealNVP's preprocessing :math:`y = \mathrm{logit}(\alpha + (1 - 2\alpha)(x +
    1/2))`, whose log-determinant is part of the model's log-likelihood.

    Departure from the paper, by default: ``batch_norm=False``. Batch normalisation (in the
    networks and as a bijector after each coupling) makes the map of one image depend on the rest
    of its batch during training and gives ``forward`` a side effect, which rules out
    memory-saving invertible backpropagation; weight normalisation and the zero-initialised
    outputs keep training stable without it. ``batch_norm=True`` restores the paper's layers
    (then call ``.eval()`` before sampling).

    Args:
        input_shape: ``(C, H, W)`` of the images.
        levels: Number of scales; see :func:`realnvp_levels` for the default. ``H`` and ``W``
            must be divisible by ``2**(levels - 1)``.
        hidden_channels: Width of the coupling networks at the first scale (32 for CIFAR-10 in
            the paper).
        blocks: Residual blocks per coupling network (4 for CIFAR-10 in the paper).
        weight_norm: Weight-normalise the networks' hidden convolutions.
        batch_norm: Use batch normalisation as the paper (see above).
        logit_alpha: Margin of the logit preprocessing, or None to model the data directly.

    Returns:
        The flow; ``flow.latent_shapes()`` lists the factored-out shapes per scale, then the top.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (ICLR 2017),
        sections 3.4-3.7 and 4.1.

    Example:
        >>> import torch
        >>> flow = realnvp((1, 8, 8), levels=2, hidden_channels=4, blocks=1)
        >>> flow.log_prob(torch.rand(2, 1, 8, 8) - 0.5).shape
        torch.Size([2])
    """
    channels, height, width = _check_shape(input_shape)
    levels = check_int("realnvp", "levels", levels, 1, MAX_LEVELS, optional=True)
    if levels is None:
        levels = realnvp_levels(input_shape)
    hidden_channels = check_int("realnvp", "hidden_channels", hidden_channels, 1, MAX_WIDTH)
    blocks = check_int("realnvp", "blocks", blocks, 0, MAX_STEPS)
    check_bool("realnvp", "weight_norm", weight_norm)
    check_bool("realnvp", "batch_norm", batch_norm)
    # alpha in (0, 1/2): the logit's input alpha + (1 - 2 alpha) u stays inside (0, 1).
    logit_alpha = check_float(
        "realnvp",
        "logit_alpha",
        logit_alpha,
        0.0,
        0.5,
        exclusive_minimum=True,
        exclusive_maximum=True,
        optional=True,
    )
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"realnvp with {levels} levels expects height and width divisible by {factor}, got "
            f"{height}x{width}; use fewer levels"
        )
    if (height // factor) * (width // factor) < 2:
        raise ValueError(
            f"realnvp with {levels} levels leaves a 1x1 image at the last scale, where a "
            "checkerboard mask has no second pixel; use fewer levels"
        )
    assert hidden_channels is not None and blocks is not None
    check_parameter_count(
        "realnvp",
        _parameter_count((channels, height, width), levels, hidden_channels, blocks),
        f"input_shape={(channels, height, width)}, levels={levels}, "
        f"hidden_channels={hidden_channels}, blocks={blocks}",
    )
    options = {"blocks": blocks, "weight_norm": weight_norm, "batch_norm": batch_norm}
    body = _scale((channels, height, width), 0, levels, hidden_channels, options)
    parts: list[Bijector] = []
    if logit_alpha is not None:
        # Affine moves [-1/2, 1/2] to [0, 1], where Logit (alpha > 0) is finite.
        parts += [Affine(shift=0.5, learnable=False), Logit(logit_alpha)]
    parts.append(body)
    bijector = Compose(parts) if len(parts) > 1 else body
    size = channels * height * width
    return Flow(StandardNormal((size,)), bijector)


def _coupling(
    shape: tuple[int, int, int], mask: Tensor, hidden: int, options: dict, checkerboard: bool
) -> list[Bijector]:
    channels = shape[0]
    if checkerboard:
        network: nn.Module = MaskedInput(
            ResNet(channels + 1, 2 * channels, hidden_channels=hidden, **options), mask
        )
        transformed = channels
    else:
        kept = int(mask.sum())
        transformed = channels - kept
        network = ResNet(kept, 2 * transformed, hidden_channels=hidden, **options)
    coupling = AffineCoupling(
        network, mask, scale_fn=ScaledTanh(transformed, event_rank=3), shift_first=False
    )
    if options["batch_norm"]:
        return [coupling, BatchNorm(channels, event_rank=3)]
    return [coupling]


def _checkerboards(
    shape: tuple[int, int, int], count: int, hidden: int, options: dict
) -> list[Bijector]:
    parts: list[Bijector] = []
    for index in range(count):
        mask = checkerboard_mask(shape[1], shape[2], flip=index % 2 == 1)
        parts += _coupling(shape, mask, hidden, options, checkerboard=True)
    return parts


def _scale(
    shape: tuple[int, int, int], index: int, levels: int, hidden_channels: int, options: dict
) -> Bijector:
    channels, height, width = shape
    hidden = hidden_channels * 2**index
    if index == levels - 1:
        return Compose(_checkerboards(shape, 4, hidden, options) + [Flatten(shape)])
    parts = _checkerboards(shape, 3, hidden, options)
    parts.append(Squeeze(2))
    squeezed = (4 * channels, height // 2, width // 2)
    for coupling_index in range(3):
        mask = channel_mask(squeezed[0], flip=coupling_index % 2 == 1)
        parts += _coupling(squeezed, mask, 2 * hidden, options, checkerboard=False)
    kept = (2 * channels,) + squeezed[1:]
    inner = _scale(kept, index + 1, levels, hidden_channels, options)
    parts.append(FactorOut(squeezed, inner, prior=None))
    return Compose(parts)


@dataclass(frozen=True)
class RealNVPConfig:
    """Arguments of :func:`realnvp` as a frozen config (for the registry and checkpoints)."""

    input_shape: tuple[int, int, int] = (3, 32, 32)
    levels: int | None = None
    hidden_channels: int = 32
    blocks: int = 4
    weight_norm: bool = True
    batch_norm: bool = False
    logit_alpha: float | None = REALNVP_LOGIT_ALPHA

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", _check_shape(self.input_shape))


def build_realnvp(config: RealNVPConfig) -> Flow:
    """The flow described by ``config``; see :func:`realnvp`."""
    return realnvp(**dataclasses.asdict(config))
