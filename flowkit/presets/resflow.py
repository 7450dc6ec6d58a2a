"""Residual flows: invertible residual blocks with Lipschitz-constrained networks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowkit._checks import (
    MAX_FEATURES,
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
from flowkit.bijectors import ActNorm, Bijector, Compose, ResidualBlock, Squeeze
from flowkit.bijectors.residual import LOG_DETS
from flowkit.distributions import Flow, StandardNormal
from flowkit.nn.lipschitz import ACTIVATIONS, LipschitzConvNet, LipschitzMLP
from flowkit.presets._construction import build_seeded, check_parameter_count, mlp_parameter_count

__all__ = ["ResFlowConfig", "build_resflow", "resflow", "resflow_image"]

# Largest event for which evaluation defaults to the exact log-determinant (one
# vector-Jacobian product per feature); above it, a Russian-roulette estimate averaged over
# EVAL_SAMPLES Hutchinson vectors.
EXACT_EVAL_MAX_FEATURES = 64
EVAL_SAMPLES = 8


@dataclass(frozen=True)
class ResFlowConfig:
    """Architecture of a residual flow for vectors; :func:`resflow` explains each field."""

    features: int
    context_features: int | None = None
    blocks: int = 5
    hidden_features: tuple[int, ...] = (64, 64)
    coefficient: float = 0.97
    activation: str = "lipswish"
    log_det: str = "russian_roulette"
    eval_log_det: str | None = None
    actnorm: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "ResFlowConfig"
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        features = check_int(owner, "features", self.features, 1, MAX_FEATURES)
        check_int(owner, "context_features", self.context_features, 1, MAX_FEATURES, optional=True)
        blocks = check_int(owner, "blocks", self.blocks, 1, MAX_STEPS)
        widths = check_shape(owner, "hidden_features", self.hidden_features, maximum=MAX_WIDTH)
        if not widths:
            raise ValueError(
                f"{owner} expects at least one hidden layer in hidden_features, got ()"
            )
        object.__setattr__(self, "hidden_features", widths)
        check_float(
            owner,
            "coefficient",
            self.coefficient,
            0.0,
            1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        check_choice(owner, "activation", self.activation, ACTIVATIONS)
        check_choice(owner, "log_det", self.log_det, LOG_DETS)
        if self.eval_log_det is not None:
            check_choice(owner, "eval_log_det", self.eval_log_det, LOG_DETS)
        check_bool(owner, "actnorm", self.actnorm)
        check_parameter_count(
            owner,
            blocks * mlp_parameter_count(features + (self.context_features or 0), widths, features),
            f"features={features}, blocks={blocks}, hidden_features={widths}",
        )


def _block_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator).item())


def build_resflow(config: ResFlowConfig) -> Flow:
    """The flow described by ``config``; see :func:`resflow`."""
    return build_seeded(config.seed, lambda generator: _build_resflow(config, generator))


def _build_resflow(config: ResFlowConfig, generator: torch.Generator | None) -> Flow:
    features = config.features
    eval_log_det = config.eval_log_det
    if eval_log_det is None:
        small = features <= EXACT_EVAL_MAX_FEATURES
        eval_log_det = "exact" if small else "russian_roulette"
    parts: list[Bijector] = []
    for _ in range(config.blocks):
        if config.actnorm:
            parts.append(ActNorm(features, event_rank=1))
        network = LipschitzMLP(
            features,
            config.hidden_features,
            context_features=config.context_features,
            coefficient=config.coefficient,
            activation=config.activation,
        )
        parts.append(
            ResidualBlock(
                network,
                log_det=config.log_det,
                eval_log_det=eval_log_det,
                eval_samples=1 if eval_log_det == "exact" else EVAL_SAMPLES,
                seed=_block_seed(generator),
            )
        )
    context_shape = None if config.context_features is None else (config.context_features,)
    return Flow(StandardNormal((features,)), Compose(parts), context_shape=context_shape)


def resflow(
    features: int,
    context_features: int | None = None,
    *,
    blocks: int = 5,
    hidden_features: Sequence[int] = (64, 64),
    coefficient: float = 0.97,
    activation: str = "lipswish",
    log_det: str = "russian_roulette",
    eval_log_det: str | None = None,
    actnorm: bool = True,
    seed: int | None = None,
) -> Flow:
    r"""Residual flow (Chen et al. 2019) for vectors: ``blocks`` invertible residual blocks.

    Each block is :math:`z = x + g(x)` (:class:`~flowkit.bijectors.ResidualBlock`), ``g`` a
    :class:`~flowkit.nn.LipschitzMLP` whose layers have spectral norm at most ``coefficient``,
    optionally preceded by an ActNorm. The base is :math:`N(0, I_D)`. Density evaluation runs the
    blocks forward; sampling inverts each block by fixed-point iteration.

    Training uses ``log_det`` (by default ResFlow's unbiased Russian-roulette estimator with the
    Neumann gradient); evaluation mode uses ``eval_log_det``, by default the exact
    log-determinant for up to 64 features and above that the estimator averaged over 8 Hutchinson
    vectors (unbiased, not exact), so reported test NLLs are exact for small tables.

    Args:
        features: Data dimension ``D``.
        context_features: Dimension of the conditioning vector, or None. The context shifts each
            block's first hidden layer (a linear map of it is added), so every block stays
            contractive in ``x`` and invertible for each context.
        blocks: Number of residual blocks.
        hidden_features: Widths of each block's hidden layers.
        coefficient: Lipschitz bound :math:`c < 1` of each layer.
        activation: ``"lipswish"``, ``"elu"`` or ``"tanh"``.
        log_det: Training log-determinant: ``"russian_roulette"``, ``"neumann"`` or ``"exact"``.
        eval_log_det: Evaluation log-determinant (None: as described above).
        actnorm: Put an ActNorm before every block.
        seed: Draw every initial weight and each block's estimator seed from this seed.

    Returns:
        The :class:`~flowkit.Flow`.

    References:
        Chen, Behrmann, Duvenaud & Jacobsen, Residual Flows for Invertible Generative Modeling
        (2019); Behrmann et al., Invertible Residual Networks (2019).

    Example:
        >>> flow = resflow(2, blocks=2, hidden_features=(16,), seed=0)
        >>> flow.sample(5).shape
        torch.Size([5, 2])
    """
    return build_resflow(
        ResFlowConfig(
            features,
            context_features,
            blocks=blocks,
            hidden_features=hidden_features,  # type: ignore[arg-type]
            coefficient=coefficient,
            activation=activation,
            log_det=log_det,
            eval_log_det=eval_log_det,
            actnorm=actnorm,
            seed=seed,
        )
    )


def resflow_image(
    shape: Sequence[int],
    *,
    levels: int = 2,
    blocks_per_level: int = 2,
    hidden_channels: int = 32,
    coefficient: float = 0.97,
    activation: str = "lipswish",
    log_det: str = "russian_roulette",
    eval_log_det: str = "russian_roulette",
    eval_samples: int = EVAL_SAMPLES,
    seed: int | None = None,
) -> Flow:
    r"""Residual flow for continuous images: residual conv blocks with squeezes between levels.

    Level :math:`l` runs ``blocks_per_level`` pairs of ActNorm and
    :class:`~flowkit.bijectors.ResidualBlock` with a :class:`~flowkit.nn.LipschitzConvNet`
    (3x3, 1x1, 3x3 spectrally normalised convolutions, the operator norm bounded at the level's
    spatial size); a :class:`~flowkit.bijectors.Squeeze` (space to depth, 2x2) separates levels.
    No factoring out: the base is :math:`N(0, I)` over the last level's shape. The flow works
    on real-valued ``(C, H, W)`` tensors; wrap it in :class:`~flowkit.Dequantized` for integer
    images.

    Args:
        shape: ``(C, H, W)``, with ``H`` and ``W`` divisible by ``2 ** (levels - 1)``.
        levels: Number of levels.
        blocks_per_level: Residual blocks per level.
        hidden_channels: Channels inside each block's network.
        coefficient: Lipschitz bound of each convolution.
        activation: ``"lipswish"``, ``"elu"`` or ``"tanh"``.
        log_det: Training log-determinant (see :class:`~flowkit.bijectors.ResidualBlock`).
        eval_log_det: Evaluation log-determinant (``"exact"`` costs one pass per pixel).
        eval_samples: Hutchinson vectors averaged in evaluation mode.
        seed: Draw every initial weight and each block's estimator seed from this seed.

    Returns:
        The :class:`~flowkit.Flow`.

    Example:
        >>> from flowkit import initialize
        >>> flow = resflow_image((1, 4, 4), levels=2, blocks_per_level=1, hidden_channels=4)
        >>> x = torch.randn(3, 1, 4, 4)
        >>> _ = initialize(flow, x)
        >>> flow.log_prob(x).shape
        torch.Size([3])
    """
    owner = "resflow_image"
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int) and d >= 1 for d in dims):
        raise ValueError(f"{owner} expects shape (C, H, W) of positive ints, got {shape!r}")
    levels = check_int(owner, "levels", levels, 1, MAX_STEPS)
    blocks_per_level = check_int(owner, "blocks_per_level", blocks_per_level, 1, MAX_STEPS)
    hidden_channels = check_int(owner, "hidden_channels", hidden_channels, 1, MAX_WIDTH)
    factor = 2 ** (levels - 1)
    if dims[1] % factor or dims[2] % factor:
        raise ValueError(
            f"{owner} expects H and W divisible by {factor} for {levels} levels, got {dims}"
        )

    def build(generator: torch.Generator | None) -> Flow:
        channels, height, width = dims
        parts: list[Bijector] = []
        for level in range(levels):
            if level:
                parts.append(Squeeze())
                channels, height, width = 4 * channels, height // 2, width // 2
            for _ in range(blocks_per_level):
                parts.append(ActNorm(channels, event_rank=3))
                network = LipschitzConvNet(
                    channels,
                    hidden_channels,
                    input_size=(height, width),
                    coefficient=coefficient,
                    activation=activation,
                )
                parts.append(
                    ResidualBlock(
                        network,
                        event_rank=3,
                        log_det=log_det,
                        eval_log_det=eval_log_det,
                        eval_samples=eval_samples,
                        seed=_block_seed(generator),
                    )
                )
        return Flow(StandardNormal((channels, height, width)), Compose(parts))

    return build_seeded(seed, build)
