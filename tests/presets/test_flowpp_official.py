"""Flow++ computes the official code's function: a float64 reference written from its description.

The reference below restates the official TensorFlow model (github.com/aravindsrinivas/flowpp,
``flows/flows.py`` and ``flows/run_cifar.py``) in torch, in its own layout and terms: NHWC
images, tuples of halves split by columns and swapped by ``TupleFlip``, ``Norm`` (``x g + b``
per position of each half), ``Pointwise`` (``x W`` per half), ``MixLogisticAttnCoupling``
(``proj_in``, blocks of ``gated_conv`` with ``a_proj`` / ``ln1`` / ``gated_attn`` / ``ln2``,
``proj_out`` read as ``[s, t, logits, means, logscales]`` with ``s = tanh``), ``space_to_depth``
and the dequantizer's shallow processor. flowkit's weights are converted to the official
variables (kernels HWIO, 1x1 convolutions as ``[in, out]`` matrices, the mixture parameters'
order permuted), and both must give the same latents and log-determinants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

import flowkit
from flowkit.bijectors import (
    ActNorm,
    Coupling,
    InvertibleConv1x1,
    SplitApply,
    Squeeze,
    SwapHalves,
)
from flowkit.presets import flowpp

CONFIG = dict(
    input_shape=(3, 4, 8),
    filters=4,
    components=2,
    blocks=2,
    heads=2,
    dropout=0.0,
    # Odd and even stages: the official code merges an odd stage's halves swapped.
    couplings=(2, 1, 3),
    dequantizer_couplings=1,
    dequantizer_filters=4,
    dequantizer_blocks=1,
    feature_channels=4,
    feature_blocks=2,
    seed=0,
)


# --- the official layers, NHWC ---------------------------------------------------------------
def conv2d(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """The official ``conv2d`` ("SAME" padding) with the kernel in TF's HWIO layout."""
    kernel = conv.weight.permute(2, 3, 1, 0)  # HWIO, as the official variable
    size = kernel.shape[0]
    out = F.conv2d(x.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), padding=size // 2)
    return out.permute(0, 2, 3, 1) + conv.bias


def nin(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """The official ``nin``: ``x W + b`` over the last axis, ``W`` of shape ``[in, out]``."""
    matrix = conv.weight[:, :, 0, 0].T
    return x @ matrix + conv.bias


def concat_elu(x: Tensor) -> Tensor:
    return F.elu(torch.cat([x, -x], -1))


def gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, -1)
    return a * torch.sigmoid(b)


def layernorm(x: Tensor, norm: torch.nn.Module) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(variance + 1e-5) * norm.weight.flatten() + norm.bias.flatten()


def gated_attn(x: Tensor, position: Tensor, block: torch.nn.Module, heads: int) -> Tensor:
    batch, height, width, channels = x.shape
    timesteps, dim = height * width, channels // heads
    c = nin(x + position, block.qkv).reshape(batch, timesteps, 3, heads, dim)
    q, k, v = c.permute(2, 0, 3, 1, 4).unbind(0)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim), -1)
    attended = (weights @ v).transpose(1, 2).reshape(batch, height, width, channels)
    return x + gate(nin(attended, block.attn_gate))


def coupling_network(x: Tensor, context: Tensor | None, network, components: int, heads: int):
    """``MixLogisticAttnCoupling``'s network: the official ``f``, to (s, t, logits, means, ...)."""
    batch, height, width, channels = x.shape
    position = network.position.permute(1, 2, 0)  # [H, W, filters], the official pos_emb
    h = conv2d(x, network.input)
    for block in network.blocks:
        c1 = conv2d(concat_elu(h), block.conv)
        if context is not None:
            c1 = c1 + nin(concat_elu(context), block.context_proj)  # a_proj
        h = h + gate(nin(concat_elu(c1), block.conv_gate))
        h = layernorm(h, block.conv_norm)
        h = layernorm(gated_attn(h, position, block, heads), block.attn_norm)
    params = 3 * components + 2
    out = conv2d(h, network.output).reshape(batch, height, width, channels, params)
    # flowkit orders each element's parameters (logits, means, log-scales, a, b); the official
    # network's output is (s, t, logits, means, log-scales): the same channels, permuted.
    out = torch.cat([out[..., 3 * components :], out[..., : 3 * components]], -1)
    s, t = torch.tanh(out[..., 0]), out[..., 1]
    logits, means, logscales = out[..., 2:].chunk(3, -1)
    return s, t, logits, means, logscales


def mixture_coupling(x: Tensor, s, t, logits, means, logscales) -> tuple[Tensor, Tensor]:
    """MixLogisticCDF, Inverse(Sigmoid), ElemwiseAffine: the element map and its log-det."""
    logscales = logscales.clamp(min=-7.0)
    z = (x.unsqueeze(-1) - means) * torch.exp(-logscales)
    log_weights = torch.log_softmax(logits, -1)
    log_cdf = torch.logsumexp(log_weights + F.logsigmoid(z), -1)
    log_pdf = torch.logsumexp(log_weights + z - logscales - 2 * F.softplus(z), -1)
    cdf = torch.exp(log_cdf)
    y = -torch.log(1 / cdf - 1)
    log_det = log_pdf - torch.log(cdf) - torch.log(1 - cdf)
    return y * torch.exp(s) + t, (log_det + s).flatten(1).sum(-1)


# --- the official flows, with flowkit's weights ------------------------------------------------
def _nhwc(x: Tensor) -> Tensor:
    return x.permute(1, 2, 0) if x.dim() == 3 else x.permute(0, 2, 3, 1)


def run_steps(halves, steps, components: int, heads: int, context: Tensor | None):
    """[Norm, Pointwise, MixLogisticAttnCoupling, TupleFlip] per step on the tuple ``halves``.

    ``halves`` holds the two halves and, for each, the index (into the whole image's last
    axes) that picks its positions from a per-position parameter; the Norm and Pointwise
    variables of each half are read from flowkit's modules at those positions.
    """
    (a, index_a), (b, index_b) = halves
    log_det = a.new_zeros(a.shape[0])
    for norm, mixing, coupling in steps:
        assert isinstance(norm, ActNorm) and isinstance(mixing, SplitApply)
        assert isinstance(coupling, Coupling)
        # flowkit's (x + bias) e^s is the official x g + b with g = e^s, b = bias g.
        g_full = _nhwc(torch.exp(norm.applied_log_scale()))
        b_full = _nhwc(norm.bias * torch.exp(norm.applied_log_scale()))
        outputs = []
        for x, index in ((a, index_a), (b, index_b)):
            g, shift = index(g_full), index(b_full)
            outputs.append(x * g + shift)
            log_det = log_det + torch.log(g).sum()
        a, b = outputs
        # Pointwise: W0 for the first element of the tuple, W1 for the second.
        for position, conv in enumerate((mixing.first, mixing.second)):
            assert isinstance(conv, InvertibleConv1x1)
            matrix = conv.weight.T
            element = (a, b)[position]
            mixed = element @ matrix
            log_det = log_det + element.shape[1] * element.shape[2] * torch.slogdet(matrix)[1]
            a, b = (mixed, b) if position == 0 else (a, mixed)
        s, t, logits, means, logscales = coupling_network(
            a, context, coupling.conditioner, components, heads
        )
        b, coupling_log_det = mixture_coupling(b, s, t, logits, means, logscales)
        log_det = log_det + coupling_log_det
        (a, index_a), (b, index_b) = (b, index_b), (a, index_a)  # TupleFlip
    return ((a, index_a), (b, index_b)), log_det


def checkerboard_split(x: Tensor):
    """The official CheckerboardSplit (NHWC): even and odd columns, with their indexers."""
    return (x[:, :, 0::2], lambda p: p[:, 0::2]), (x[:, :, 1::2], lambda p: p[:, 1::2])


def merge_columns(halves) -> Tensor:
    """The official Inverse(CheckerboardSplit): the tuple's halves interleaved in tuple order.

    After an odd number of couplings (each followed by TupleFlip) the tuple holds the odd
    columns first, and the official merge puts them in the even places.
    """
    (a, _), (b, _) = halves
    return torch.stack([a, b], 3).flatten(2, 3)


def space_to_depth(x: Tensor) -> Tensor:
    n, height, width, channels = x.shape
    x = x.reshape(n, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, height // 2, width // 2, 4 * channels)


def _grouped(parts: list, size: int) -> list:
    return [tuple(parts[i : i + size]) for i in range(0, len(parts), size)]


def official_main_flow(x: Tensor, model, config: dict) -> tuple[Tensor, Tensor]:
    """ImgProc, then the three stages, on ``x`` in [0, 256) (NHWC); returns (z NHWC, log-det)."""
    components, heads = config["components"], config["heads"]
    first, middle, last = config["couplings"]
    # Past Affine and Logit, before Flatten; without the SwapHalves of flowkit's odd stages,
    # which the reference does by merging its tuple in order.
    parts = [
        part
        for part in list(model.flow.bijector.bijectors)[2:-1]
        if not isinstance(part, (SwapHalves, Squeeze))
    ]
    steps_first = _grouped(parts[: 3 * first], 3)
    steps_middle = _grouped(parts[3 * first : 3 * (first + middle)], 3)
    steps_last = _grouped(parts[3 * (first + middle) :], 3)
    # ImgProc
    y = x * (0.9 / 256) + 0.05
    h = -torch.log(1 / y - 1)
    log_det = (-torch.log(y) - torch.log(1 - y)).flatten(1).sum(-1)
    log_det = log_det + math.log(0.9 / 256) * x[0].numel()
    halves, stage = run_steps(checkerboard_split(h), steps_first, components, heads, None)
    h = space_to_depth(merge_columns(halves))
    log_det = log_det + stage
    half = h.shape[-1] // 2
    split = (
        (h[..., :half], lambda p: p[..., :half]),
        (h[..., half:], lambda p: p[..., half:]),
    )
    halves, stage = run_steps(split, steps_middle, components, heads, None)
    (a, _), (b, _) = halves
    h = torch.cat([a, b], -1)  # Inverse(ChannelSplit), in tuple order
    log_det = log_det + stage
    halves, stage = run_steps(checkerboard_split(h), steps_last, components, heads, None)
    return merge_columns(halves), log_det + stage


def official_context(image: Tensor, network) -> Tensor:
    """The shallow processor on integer pixels (NHWC): halves stacked, proj, gated convs."""
    x = image / 256.0 - 0.5
    h = conv2d(torch.cat([x[:, :, 0::2], x[:, :, 1::2]], -1), network.input)
    for block in network.blocks:
        c1 = concat_elu(conv2d(concat_elu(h), block.conv))
        h = h + gate(conv2d(c1, block.conv_gate))
    return h


def _model() -> torch.nn.Module:
    model = flowpp(**CONFIG).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(0.2 * noise)
    images = torch.randint(0, 256, (8, 3, 4, 8), generator=generator)
    flowkit.initialize(model, images)
    return model.eval()


def test_the_main_flow_is_the_official_function() -> None:
    model = _model()
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (5, 3, 4, 8), generator=generator).double()
    dequantized = pixels + torch.rand(5, 3, 4, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = model.flow.bijector(dequantized / 256 - 0.5)
        reference, reference_log_det = official_main_flow(_nhwc(dequantized), model, CONFIG)
    # flowkit's flow starts from (x + u) / 256 - 1/2: its log-det lacks D log(1/256).
    log_det = log_det - dequantized[0].numel() * math.log(256)
    torch.testing.assert_close(z, reference.permute(0, 3, 1, 2).flatten(1), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_det, reference_log_det, rtol=1e-12, atol=1e-9)


def test_the_dequantizer_is_the_official_function() -> None:
    model = _model()
    dequantizer = model.dequantizer
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (5, 3, 4, 8), generator=generator).double()
    uniform = torch.rand(5, 3, 4, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        features = dequantizer.features(pixels / 256 - 0.5)
        context = official_context(_nhwc(pixels), dequantizer.features.network)
        torch.testing.assert_close(_nhwc(features), context, rtol=0, atol=1e-12)
        u, log_q = dequantizer(uniform, pixels / 256 - 0.5)
        # The official Dequant.forward: Gaussian eps (here the same draw, through Phi^-1), the
        # flow, then Sigmoid; it returns logd - log N(eps), that is -log q(u | x).
        eps = torch.special.ndtri(_nhwc(uniform))
        eps_log_p = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(-1)
        parts = [
            p
            for p in dequantizer.bijector.bijectors
            if isinstance(p, (ActNorm, SplitApply, Coupling))
        ]
        halves, flow_log_det = run_steps(
            checkerboard_split(eps),
            _grouped(parts, 3),
            CONFIG["components"],
            CONFIG["heads"],
            context,
        )
        h = merge_columns(halves)
        sigmoid_log_det = (-F.softplus(h) - F.softplus(-h)).flatten(1).sum(-1)
        reference_u = torch.sigmoid(h)
        reference_log_q = eps_log_p - (flow_log_det + sigmoid_log_det)
    torch.testing.assert_close(_nhwc(u), reference_u, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(log_q, reference_log_q, rtol=1e-12, atol=1e-8)
