"""Inference fusion: ActNorm folded into the linear maps around it gives the same model."""

from __future__ import annotations

import torch
from torch.testing import assert_close

import flowkit
from flowkit.bijectors import ActNorm, AffineConv1x1, InvertibleConv1x1
from flowkit.nn import GlowConditioner
from flowkit.performance import fuse_for_inference
from flowkit.presets.glow import glow


def test_fused_glow_computes_the_same_log_density_and_samples() -> None:
    torch.manual_seed(0)
    flow = glow(K=2, L=2, input_shape=(2, 8, 8), hidden_channels=8, seed=0).double()
    x = torch.rand(16, 2, 8, 8, dtype=torch.float64) - 0.5
    flowkit.initialize(flow, x)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in flow.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.05 * noise)
    flow.eval()
    fused = fuse_for_inference(flow)
    # Every coupling network lost its ActNorms, every ActNorm -> 1x1 convolution pair is one map.
    networks = [m for m in fused.modules() if isinstance(m, GlowConditioner)]
    assert networks and all(m.norm_in is None and m.norm_hidden is None for m in networks)
    assert not any(isinstance(m, (ActNorm, InvertibleConv1x1)) for m in fused.modules())
    assert sum(isinstance(m, AffineConv1x1) for m in fused.modules()) == 4
    with torch.no_grad():
        assert_close(fused.log_prob(x), flow.log_prob(x), rtol=1e-10, atol=1e-9)
        z = torch.randn(4, fused.base.event_shape.numel(), dtype=torch.float64)
        assert_close(fused.bijector.inverse(z)[0], flow.bijector.inverse(z)[0], rtol=0, atol=1e-9)
    # The original is untouched.
    assert any(isinstance(m, ActNorm) for m in flow.modules())
