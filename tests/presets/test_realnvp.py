"""Tests of the RealNVP image preset: structure, parameter count, density and sampling."""

from __future__ import annotations

import math

import pytest
import torch

from flowkit.bijectors import AffineCoupling, BatchNorm, FactorOut, Squeeze
from flowkit.presets.realnvp import realnvp, realnvp_levels
from flowkit.testing import check_bijector


def _perturb(module, scale=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(noise.to(parameter.dtype) * scale)
    return module


def _resnet(c_in, c_out, hidden, blocks, batch_norm):
    """Parameters of one weight-normalised ResNet conditioner (3x3 hidden, 1x1 output)."""
    bias = 0 if batch_norm else hidden
    conv_in = c_in * hidden * 9 + 2 * hidden
    block = 2 * (hidden * hidden * 9 + hidden + bias) + (4 * hidden if batch_norm else 0)
    return conv_in + blocks * block + (2 * hidden if batch_norm else 0) + hidden * c_out + c_out


def _realnvp_parameters(channels, levels, hidden, blocks, batch_norm=False):
    """Parameter count of the documented RealNVP architecture, scale by scale."""
    total = 0
    for level in range(levels):
        width = hidden * 2**level
        last = level == levels - 1
        checkerboards = 4 if last else 3
        # A checkerboard coupling's network sees C channels plus the mask and outputs 2C; the
        # ScaledTanh has C ranges; BatchNorm adds a log-scale and a shift per channel.
        per = _resnet(channels + 1, 2 * channels, width, blocks, batch_norm) + channels
        total += checkerboards * (per + (2 * channels if batch_norm else 0))
        if last:
            break
        squeezed = 4 * channels
        half = squeezed // 2
        per = _resnet(half, 2 * half, 2 * width, blocks, batch_norm) + half
        total += 3 * (per + (2 * squeezed if batch_norm else 0))
        channels = half
    return total


@pytest.mark.parametrize("batch_norm", [False, True])
def test_parameter_count_matches_the_formula(batch_norm):
    flow = realnvp((1, 4, 4), levels=2, hidden_channels=2, blocks=1, batch_norm=batch_norm)
    count = sum(p.numel() for p in flow.parameters())
    assert count == _realnvp_parameters(1, 2, 2, 1, batch_norm)


def test_parameter_count_of_three_scales():
    flow = realnvp((3, 8, 8), levels=3, hidden_channels=3, blocks=2)
    assert sum(p.numel() for p in flow.parameters()) == _realnvp_parameters(3, 3, 3, 2)


def test_default_levels():
    assert realnvp_levels((3, 32, 32)) == 4
    assert realnvp_levels((1, 28, 28)) == 3
    assert realnvp_levels((3, 6, 10)) == 2
    assert realnvp_levels((1, 2, 1)) == 1


@pytest.mark.parametrize(
    ("shape", "latents"),
    [
        ((3, 32, 32), [(6, 16, 16), (12, 8, 8), (24, 4, 4), (24, 4, 4)]),
        ((1, 28, 28), [(2, 14, 14), (4, 7, 7), (4, 7, 7)]),
    ],
    ids=["cifar", "mnist"],
)
def test_builds_and_runs_on_standard_image_shapes(shape, latents):
    flow = _perturb(realnvp(shape, hidden_channels=2, blocks=1))
    assert tuple(flow.event_shape) == shape
    assert flow.latent_shapes() == latents
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    levels = len(latents)
    assert len(couplings) == 6 * (levels - 1) + 4
    assert sum(isinstance(m, Squeeze) for m in flow.modules()) == levels - 1
    assert sum(isinstance(m, FactorOut) for m in flow.modules()) == levels - 1

    x = torch.rand((2,) + shape) - 0.5
    log_prob = flow.log_prob(x)
    assert log_prob.shape == (2,) and torch.isfinite(log_prob).all()
    # The latent is a standard normal vector of the image's size.
    z = flow.encode(x)
    assert z.shape == (2, math.prod(shape))
    with torch.no_grad():
        torch.testing.assert_close(flow.decode(z), x, atol=1e-4, rtol=1e-4)
        samples, sample_log_prob = flow.sample_and_log_prob(3)
    assert samples.shape == (3,) + shape
    torch.testing.assert_close(
        flow.log_prob(samples).detach(), sample_log_prob, atol=1e-2, rtol=1e-4
    )


def test_log_prob_includes_the_logit_preprocessing():
    with_logit = realnvp((1, 4, 4), levels=2, hidden_channels=2, blocks=1)
    plain = realnvp((1, 4, 4), levels=2, hidden_channels=2, blocks=1, logit_alpha=None)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) - 0.5
    with_logit.double()
    plain.double()
    # Zero-initialised couplings are the identity, so both differ only by the preprocessing:
    # y = logit(0.05 + 0.9 (x + 1/2)), dy/dx = 0.9 / (u (1 - u)).
    u = 0.05 + 0.9 * (x + 0.5)
    y = torch.log(u) - torch.log1p(-u)
    log_det = torch.log(0.9 / (u * (1 - u))).flatten(1).sum(-1)
    normal = -0.5 * y.flatten(1).square().sum(-1) - 8 * math.log(2 * math.pi)
    torch.testing.assert_close(with_logit.log_prob(x), normal + log_det)
    torch.testing.assert_close(plain.log_prob(y), normal)


def test_bijector_passes_the_contract_in_float64():
    flow = realnvp((2, 4, 4), levels=2, hidden_channels=2, blocks=1, logit_alpha=None)
    check_bijector(flow.bijector, (2, 4, 4), batch_shape=(2,), perturb=0.05)


def test_batch_norm_variant_round_trips_in_eval_mode():
    flow = realnvp((1, 4, 4), levels=2, hidden_channels=2, blocks=1, batch_norm=True)
    assert any(isinstance(m, BatchNorm) for m in flow.modules())
    x = torch.rand(16, 1, 4, 4) - 0.5
    flow(x)
    flow.eval()
    with torch.no_grad():
        torch.testing.assert_close(flow.decode(flow.encode(x)), x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (1, 28, 28), "levels": 4}, "divisible by 8"),
        ({"input_shape": (1, 2, 2), "levels": 2}, "1x1 image"),
        ({"input_shape": (3, 32), "levels": 2}, r"\(C, H, W\)"),
        ({"input_shape": (1, 4, 4), "levels": 0}, r"levels as an int in \[1, 16\] or None, got 0"),
        (
            {"input_shape": (1, 4, 4), "hidden_channels": 0},
            r"hidden_channels as an int in \[1, 65536\], got 0",
        ),
    ],
)
def test_invalid_configurations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        realnvp(**kwargs)
