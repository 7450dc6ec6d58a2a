import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import flowkit
from flowkit.bijectors import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FactorOut,
    InvertibleConv1x1,
    Permute,
    Standardize,
)
from flowkit.presets import glow
from flowkit.presets.glow import GlowConfig, build_glow, class_logits, top_latent
from flowkit.testing import check_bijector
from flowkit.testing.strategies import seeds


def official_parameter_count(K, L, channels, hidden, coupling="affine", lu=True, learn_top=True):
    """Trainable variables of openai/glow's model, counted from its layer definitions."""
    total = 0
    c = channels
    for level in range(L):
        c *= 4
        n = c // 2
        per_step = 2 * c  # actnorm: bias and logs
        per_step += (2 * c * c + c) if lu else c * c  # invconv: L, U, log_S (or W)
        per_step += 9 * (n + 1) * hidden + 2 * hidden  # conv l_1 (edge channel) + actnorm
        per_step += hidden * hidden + 2 * hidden  # conv l_2 (1x1) + actnorm
        out = c if coupling == "affine" else n
        per_step += 9 * (hidden + 1) * out + 2 * out  # conv2d_zeros: W, b, logs
        total += K * per_step
        if level < L - 1:
            total += 9 * (n + 1) * c + 2 * c  # split2d_prior conv2d_zeros
            c = n
    if learn_top:
        total += 9 * (2 * c + 1) * 2 * c + 4 * c  # prior conv2d_zeros on the zero tensor
    return total


def count(flow):
    return sum(p.numel() for p in flow.parameters())


def test_cifar10_parameter_count_matches_official_structure():
    flow = glow(K=32, L=3, coupling="affine", input_shape=(3, 32, 32), hidden_channels=512)
    expected = official_parameter_count(32, 3, 3, 512)
    assert count(flow) == expected
    # The reference figure for the official model is about 44 million.
    assert abs(count(flow) - 44e6) / 44e6 < 0.02


@pytest.mark.parametrize("coupling", ["affine", "additive"])
@pytest.mark.parametrize("permutation", ["conv1x1_lu", "conv1x1"])
def test_small_parameter_counts(coupling, permutation):
    flow = glow(
        K=3,
        L=2,
        coupling=coupling,
        input_shape=(2, 8, 8),
        hidden_channels=16,
        permutation=permutation,
    )
    expected = official_parameter_count(3, 2, 2, 16, coupling, lu=permutation == "conv1x1_lu")
    assert count(flow) == expected


def test_structure_and_latent_shapes():
    flow = glow(K=2, L=3, input_shape=(3, 16, 16), hidden_channels=8)
    assert flow.latent_shapes() == [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    modules = list(flow.bijector.modules())
    assert sum(isinstance(m, AffineCoupling) for m in modules) == 6
    assert sum(isinstance(m, InvertibleConv1x1) for m in modules) == 6
    assert sum(isinstance(m, FactorOut) for m in modules) == 2
    assert sum(isinstance(m, Standardize) for m in modules) == 1
    # Each step is ActNorm -> 1x1 convolution -> coupling, in that order.
    chain = flow.bijector[1]
    kinds = [type(part) for part in chain]
    assert kinds == [ActNorm, InvertibleConv1x1, AffineCoupling] * 2


def test_options_change_the_layers():
    flow = glow(
        K=1,
        L=1,
        coupling="additive",
        permutation="reverse",
        learn_top=False,
        input_shape=(1, 4, 4),
        hidden_channels=4,
    )
    modules = list(flow.bijector.modules())
    assert any(isinstance(m, AdditiveCoupling) for m in modules)
    assert any(isinstance(m, Permute) for m in modules)
    assert not any(isinstance(m, Standardize) for m in modules)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(3, 30, 32), L=2), "divisible by 4"),
        (dict(coupling="spline"), "coupling"),
        (dict(permutation="random"), "permutation"),
        (dict(K=0), r"K as an int in \[1, 4096\], got 0"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_bad_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glow(**{"input_shape": (3, 8, 8), "hidden_channels": 4, **kwargs})


@given(
    seed=seeds(),
    coupling=st.sampled_from(["affine", "additive"]),
    permutation=st.sampled_from(["conv1x1_lu", "conv1x1", "shuffle"]),
)
def test_glow_bijector_passes_the_harness(seed, coupling, permutation):
    flow = glow(
        K=1,
        L=2,
        coupling=coupling,
        permutation=permutation,
        input_shape=(2, 4, 4),
        hidden_channels=4,
        seed=seed,
    )
    # Four examples: the top ActNorm initialises from batch x 1 x 1 values per channel. The
    # perturbation is the registry's bound for multi-level composites: at the default 0.1 the
    # perturbed zero-initialised output layers make the inverse expand without bound (seed 2263:
    # the coupling's sigmoid scale reaches 0.002, then the split prior's log-scale, linear in
    # activations of size ~600, reaches ~100, so |x| ~ 1e95 from |z| <= 3), and no float64
    # round trip survives that conditioning.
    check_bijector(flow.bijector, (2, 4, 4), seed=seed, batch_shape=(4,), perturb=0.05)


def test_class_conditional_glow_passes_the_harness_with_labels():
    flow = glow(K=1, L=2, input_shape=(2, 4, 4), hidden_channels=4, num_classes=3, seed=0)
    check_bijector(flow.bijector, (2, 4, 4), context=torch.tensor([0, 2, 1]), requires_context=True)


def test_inverse_reconstructs_and_temperature_zero_sample_is_finite():
    torch.manual_seed(0)
    flow = glow(K=2, L=2, input_shape=(3, 8, 8), hidden_channels=16, seed=0)
    x = torch.rand(6, 3, 8, 8) - 0.5
    flowkit.initialize(flow, x)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.02 * torch.randn_like(p))
        z = flow.encode(x)
        assert (flow.decode(z) - x).abs().max() < 1e-5
        samples = flow.sample(4, temperature=0.0)
    assert torch.isfinite(samples).all()
    # At temperature 0 every latent is zero, so all samples coincide.
    assert (samples - samples[0]).abs().max() < 1e-6


def test_class_conditional_prior_and_classifier():
    torch.manual_seed(0)
    flow = glow(K=1, L=2, input_shape=(1, 8, 8), hidden_channels=8, num_classes=4, seed=0)
    x = torch.rand(5, 1, 8, 8) - 0.5
    labels = torch.tensor([0, 1, 2, 3, 0])
    flowkit.initialize(flow, x, labels)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)
    z, log_prob = flow.latent_and_log_prob(x, labels)
    other = flow.log_prob(x, (labels + 1) % 4)
    assert not torch.allclose(log_prob, other)  # the prior depends on the class
    # The classifier reads the top latent before standardisation, which does not depend on y.
    top_a = top_latent(flow, z, labels)
    top_b = top_latent(flow, flow.encode(x, (labels + 1) % 4), (labels + 1) % 4)
    assert torch.allclose(top_a, top_b, atol=1e-5)
    assert class_logits(flow, z, labels).shape == (5, 4)
    samples = flow.sample(context=labels, temperature=0.5)
    assert samples.shape == (5, 1, 8, 8)


def test_memory_saving_gradients_equal_plain_autograd():
    results = {}
    for dtype in (torch.float32, torch.float64):
        for memory_saving in (False, True):
            torch.manual_seed(0)
            flow = glow(
                K=3,
                L=3,
                input_shape=(2, 8, 8),
                hidden_channels=8,
                seed=0,
                memory_saving=memory_saving,
            ).to(dtype)
            x = torch.rand(4, 2, 8, 8, dtype=dtype) - 0.5
            with (
                torch.no_grad()
            ):  # perturb first: initialisation then keeps the networks well scaled
                for p in flow.parameters():
                    p.add_(0.05 * torch.randn(p.shape, dtype=dtype))
            flowkit.initialize(flow, x)
            loss = -flow.log_prob(x).mean()
            loss.backward()
            results[dtype, memory_saving] = [p.grad.clone() for p in flow.parameters()]
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        for plain, saved in zip(results[dtype, False], results[dtype, True]):
            error = (plain - saved).norm() / plain.norm().clamp_min(1e-30)
            assert error < tolerance, (dtype, float(error))


def test_memory_saving_reports_reconstruction_drift():
    from flowkit.bijectors.memory import ReconstructionError

    torch.manual_seed(0)
    flow = glow(K=2, L=1, input_shape=(1, 4, 4), hidden_channels=4, seed=0, memory_saving=True)
    x = torch.rand(2, 1, 4, 4) - 0.5
    flowkit.initialize(flow, x)
    chain = flow.bijector[1]
    chain.drift_tolerance = 0.0  # any rounding now counts as too much drift
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loss = -flow.log_prob(x).mean()
    with pytest.raises(ReconstructionError, match="rebuilt"):
        loss.backward()


def test_seed_fixes_every_weight():
    a = glow(K=1, L=2, input_shape=(1, 4, 4), hidden_channels=4, seed=3)
    torch.manual_seed(123)
    b = glow(K=1, L=2, input_shape=(1, 4, 4), hidden_channels=4, seed=3)
    c = glow(K=1, L=2, input_shape=(1, 4, 4), hidden_channels=4, seed=4)
    pairs = list(zip(a.state_dict().values(), b.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values())
    )


def test_config_is_recorded():
    flow = glow(K=1, L=1, input_shape=(1, 4, 4), hidden_channels=4)
    assert flow.config == GlowConfig(K=1, L=1, input_shape=(1, 4, 4), hidden_channels=4)
    assert math.prod(flow.event_shape) == 16


def test_the_readme_preset_builds_the_same_weights_every_time():
    from flowkit.presets.runs import get_run_preset

    config = GlowConfig(**get_run_preset("glow-small").model)
    first, second = build_glow(config).state_dict(), build_glow(config).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # A different seed must change them, or the check above proves nothing.
    other = build_glow(dataclasses.replace(config, seed=config.seed + 1)).state_dict()
    assert not all(torch.equal(first[key], other[key]) for key in first)
