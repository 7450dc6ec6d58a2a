"""The parameter count of a Flow++ model, exactly, from its config alone (nothing is built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowkit.presets.flowpp import FlowPPConfig

__all__ = ["flowpp_parameter_count"]


def _conv_attn_count(
    in_channels: int,
    out_channels: int,
    filters: int,
    blocks: int,
    positions: int,
    heads: int,
    context: int = 0,
    context_mode: str = "blocks",
) -> int:
    """The parameters of a :class:`~flowkit.nn.ConvAttn` (exact)."""
    into_input = context if context_mode == "input" else 0
    count = (9 * (in_channels + into_input) + 1) * filters + (9 * filters + 1) * out_channels
    # Gated convolution (3x3 then 1x1) and its layer norm; attention (1x1 in, 1x1 out) and its.
    per_block = 18 * filters**2 + filters + 4 * filters**2 + 2 * filters + 2 * filters
    per_block += (5 * filters**2 + 5 * filters + 2 * filters) if heads else 0
    if context and context_mode == "blocks":
        per_block += (2 * context + 1) * filters
    return count + blocks * per_block + (filters * positions if heads else 0)


def _gated_conv_net_count(in_channels: int, filters: int, blocks: int) -> int:
    """The parameters of a :class:`~flowkit.nn.GatedConvNet` (exact): two 3x3 convs a block."""
    return (9 * in_channels + 1) * filters + blocks * (54 * filters**2 + 3 * filters)


def _step_count(config: FlowPPConfig, shape: tuple[int, int, int], halves: int) -> int:
    """Normalisation and 1x1 convolution(s) of one step on ``shape``, whose halves have ``halves``.

    A checkerboard's halves keep all channels, a channel split's half of them.
    """
    channels, height, width = shape
    norm = 2 * channels * (height * width if config.norm == "position" else 1)
    if config.mixing == "halves":
        return norm + 2 * halves**2
    return norm + 2 * channels**2 + channels


def flowpp_parameter_count(config: FlowPPConfig) -> int:
    """The number of parameters of the model ``config`` describes (exact, without building it)."""
    channels, height, width = config.input_shape
    params = 3 * config.components + 2
    k = config.filters
    checkerboard = _step_count(config, (channels, height, width), channels) + _conv_attn_count(
        channels, params * channels, k, config.blocks, height * width // 2, config.heads
    )
    squeezed = (4 * channels, height // 2, width // 2)
    half = 2 * channels
    channel = _step_count(config, squeezed, half) + _conv_attn_count(
        half, params * half, k, config.blocks, height * width // 4, config.heads
    )
    small_checkerboard = _step_count(config, squeezed, 4 * channels) + _conv_attn_count(
        4 * channels, 4 * params * channels, k, config.blocks, height * width // 8, config.heads
    )
    first, middle, last = config.couplings
    count = first * checkerboard + middle * channel + last * small_checkerboard
    if config.dequantizer_couplings:
        features = config.feature_channels
        if config.feature_network == "gated_conv":
            count += _gated_conv_net_count(2 * channels, features, config.feature_blocks)
        else:
            count += _conv_attn_count(
                2 * channels, features, features, config.feature_blocks, 0, config.heads
            )
        step = _step_count(config, (channels, height, width), channels) + _conv_attn_count(
            channels,
            params * channels,
            config.dequantizer_filters,
            config.dequantizer_blocks,
            height * width // 2,
            config.heads,
            features,
            config.context_mode,
        )
        count += config.dequantizer_couplings * step
    return count
