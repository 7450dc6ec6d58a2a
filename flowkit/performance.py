"""Speed helpers: the C allocator policy, and fusing ActNorm into neighbouring linear maps."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import os
import sys

import torch
from torch import nn

from flowkit.bijectors import ActNorm, Compose, InvertibleConv1x1
from flowkit.bijectors.linear import AffineConv1x1
from flowkit.nn.actnorm import ActNormBase
from flowkit.nn.conv import EdgeConv2d
from flowkit.nn.glow import GlowConditioner

__all__ = ["fuse_for_inference", "tune_allocator"]

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Keep up to 4 GiB of freed memory instead of returning it to the system after every step.
_TRIM_THRESHOLD_BYTES = 4 * 1024**3


def tune_allocator() -> bool:
    """Stop glibc from mapping and unmapping large tensors on every training step.

    glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it with ``munmap``
    when freed, so a training step page-faults its large activations in again and again (millions
    of faults per step for Glow). This sets the policy that the environment variables
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296`` would set: large blocks come from the
    heap and stay there for reuse. Variables the user set explicitly are respected. The trainer and
    the command line call this at start-up; it is a no-op outside glibc (macOS, Windows, musl).

    Returns:
        True if the policy was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = True
    if "MALLOC_MMAP_MAX_" not in os.environ:
        applied &= bool(mallopt(_M_MMAP_MAX, 0))
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        applied &= bool(mallopt(_M_TRIM_THRESHOLD, min(_TRIM_THRESHOLD_BYTES, 2**31 - 1)))
    return applied


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ActNorm folded into a neighbouring linear map.

    Two folds, both exact up to rounding:

    * In coupling networks, ``conv -> ActNorm`` becomes one convolution with scaled weights and a
      bias, which saves two passes over the widest activations.
    * In the flow, ``ActNorm -> InvertibleConv1x1`` becomes one :class:`AffineConv1x1`
      :math:`z = W \\mathrm{diag}(s) x + W (s \\odot b)`, with its inverse and log-determinant
      computed once in float64.

    The copy is for evaluation and sampling: its parameters are frozen and it has no
    data-dependent initialisation left. The original model is unchanged.
    """
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        if isinstance(module, GlowConditioner):
            _fold_conv_actnorm(module.conv_in, module.norm_in)
            _fold_conv_actnorm(module.conv_hidden, module.norm_hidden)
            module.norm_in = None
            module.norm_hidden = None
        if isinstance(module, Compose):
            parts = list(module.bijectors)
            merged: list[nn.Module] = []
            index = 0
            while index < len(parts):
                part = parts[index]
                following = parts[index + 1] if index + 1 < len(parts) else None
                if isinstance(part, ActNorm) and isinstance(following, InvertibleConv1x1):
                    merged.append(_fold_actnorm_conv1x1(part, following))
                    index += 2
                else:
                    merged.append(part)
                    index += 1
            module.bijectors = nn.ModuleList(merged)
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused


def _fold_conv_actnorm(conv: EdgeConv2d, norm: ActNormBase) -> None:
    scale, shift = norm.folded_scale_and_shift()
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    if conv.edge_weight is not None:
        conv.edge_weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift)


def _fold_actnorm_conv1x1(norm: ActNorm, conv: InvertibleConv1x1) -> AffineConv1x1:
    weight, _ = conv.weight_and_log_det()
    scale = torch.exp(norm.applied_log_scale().double()).flatten()
    bias = norm.bias.flatten().double()
    weight = weight.double()
    return AffineConv1x1(weight * scale, weight @ (scale * bias)).to(norm.bias.dtype)
