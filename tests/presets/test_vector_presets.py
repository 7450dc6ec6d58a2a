import dataclasses
import inspect

import pytest
import torch

import flowkit
from flowkit import Flow
from flowkit.bijectors import (
    ActNorm,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
    Permute,
    SplineAutoregressive,
    SplineCoupling,
)
from flowkit.nn import MADE
from flowkit.presets import MAFConfig, NSFConfig, build_maf, iaf, maf, nsf
from flowkit.presets.registry import build_model, config_to_dict
from flowkit.testing import check_bijector


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _made_count(features, params, hidden, context):
    # Masked layers keep full weight matrices; the context enters each hidden layer without bias.
    widths = [features, *hidden]
    count = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    count += (context or 0) * sum(hidden)
    return count + hidden[-1] * features * params + features * params


def _mlp_count(inputs, outputs, hidden):
    widths = [inputs, *hidden, outputs]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize("context", [None, 3])
def test_maf_architecture_and_parameter_count(context):
    flow = maf(4, context, transforms=3, hidden_features=(10, 12), actnorm=True)
    parts = list(flow.bijector)
    kinds = [type(p) for p in parts]
    step = [ActNorm, MaskedAffineAutoregressive]
    assert kinds == step + [Permute] + step + [Permute] + step
    reversal = torch.tensor([3, 2, 1, 0])
    assert all(torch.equal(p.permutation, reversal) for p in parts if isinstance(p, Permute))
    expected = 3 * (_made_count(4, 2, (10, 12), context) + 2 * 4)
    assert _count(flow) == expected
    assert flow.event_shape == (4,)
    assert flow.context_shape == (None if context is None else (context,))


def test_maf_starts_random_by_default_and_as_the_identity_on_request():
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    base = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    torch.manual_seed(0)
    identity = maf(3, transforms=2, hidden_features=(8,), identity_init=True)
    torch.manual_seed(0)
    random = maf(3, transforms=2, hidden_features=(8,))
    with torch.no_grad():
        assert torch.allclose(identity.log_prob(x), base, atol=1e-6)
        assert (random.log_prob(x) - base).abs().max() > 1e-3
    outputs = [p.conditioner.output_layer for p in random.bijector if hasattr(p, "conditioner")]
    assert len(outputs) == 2 and all(layer.weight.abs().sum() > 0 for layer in outputs)


def test_maf_residual_parameter_count():
    flow = maf(3, 2, transforms=2, hidden_features=(8, 8), residual=True)
    first = 3 * 8 + 8 + 2 * 8
    block = 2 * (8 * 8 + 8) + 2 * 8
    output = 8 * 6 + 6
    assert _count(flow) == 2 * (first + 2 * block + output)


@pytest.mark.parametrize("context", [None, 2])
@pytest.mark.parametrize("features", [2, 5])
def test_nsf_coupling_architecture_and_parameter_count(features, context):
    bins, hidden = 6, (9, 7)
    flow = nsf(features, context, transforms=2, bins=bins, hidden_features=hidden)
    kinds = [type(p) for p in flow.bijector]
    assert kinds == [SplineCoupling, Permute, SplineCoupling]
    kept = features // 2
    per_step = _mlp_count(kept + (context or 0), (3 * bins - 1) * (features - kept), hidden)
    assert _count(flow) == 2 * per_step


@pytest.mark.parametrize("context", [None, 2])
def test_nsf_autoregressive_parameter_count(context):
    flow = nsf(
        3, context, transforms=2, bins=4, hidden_features=(8,), autoregressive=True, actnorm=True
    )
    kinds = [type(p) for p in flow.bijector]
    assert kinds == [ActNorm, SplineAutoregressive, Permute, ActNorm, SplineAutoregressive]
    assert _count(flow) == 2 * (_made_count(3, 11, (8,), context) + 2 * 3)


def _banana(n, generator):
    a = torch.randn(n, generator=generator)
    b = 0.5 * a.square() - 1.0 + 0.3 * torch.randn(n, generator=generator)
    return torch.stack([a, b], dim=-1)


def _train(flow, x, context=None, steps=20, lr=1e-2):
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    with torch.no_grad():
        before = -flow.log_prob(x, context).mean().item()
    for _ in range(steps):
        loss = -flow.log_prob(x, context).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = -flow.log_prob(x, context).mean().item()
    return before, after


@pytest.mark.parametrize(
    "make",
    [
        lambda: maf(2, transforms=2, hidden_features=(16, 16)),
        lambda: maf(2, transforms=2, hidden_features=(16, 16), residual=True, actnorm=True),
        lambda: nsf(2, transforms=2, bins=4, hidden_features=(16, 16)),
        lambda: nsf(2, transforms=2, bins=4, hidden_features=(16, 16), autoregressive=True),
    ],
    ids=["maf", "maf-residual-actnorm", "nsf-coupling", "nsf-autoregressive"],
)
def test_presets_learn_a_two_dimensional_density(make):
    torch.manual_seed(0)
    flow = make()
    x = _banana(128, torch.Generator().manual_seed(1))
    flowkit.initialize(flow, x)
    before, after = _train(flow, x)
    # A standard normal base alone scores this data at about 2.6 nats; a few steps must help.
    assert after < before - 0.3, (before, after)
    assert torch.isfinite(flow.sample(8)).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: maf(2, 1, transforms=2, hidden_features=(16,)),
        lambda: nsf(2, 1, transforms=2, bins=4, hidden_features=(16,)),
        lambda: nsf(2, 1, transforms=2, bins=4, hidden_features=(16,), autoregressive=True),
    ],
    ids=["maf", "nsf-coupling", "nsf-autoregressive"],
)
def test_conditional_presets_use_the_context(make):
    torch.manual_seed(0)
    flow = make()
    generator = torch.Generator().manual_seed(2)
    context = torch.randn(128, 1, generator=generator)
    x = 1.5 * context + 0.3 * torch.randn(128, 2, generator=generator)
    before, after = _train(flow, x, context)
    assert after < before - 1.0, (before, after)
    assert flow.log_prob(x[:5], context[:5]).shape == (5,)
    with torch.no_grad():
        samples = flow.sample(100, context=torch.tensor([[1.0], [-1.0]]))
    assert samples.shape == (100, 2, 2)
    # The conditional mean follows the context it was trained on.
    assert samples[:, 0].mean() > samples[:, 1].mean() + 1.0
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x[:5])


@pytest.mark.parametrize(
    "make, context_shape",
    [
        (lambda: maf(3, 2, transforms=2, hidden_features=(8,), actnorm=True), (2,)),
        (lambda: nsf(3, transforms=2, bins=3, hidden_features=(8,), actnorm=True), None),
    ],
    ids=["maf-context-actnorm", "nsf-actnorm"],
)
def test_preset_bijectors_honour_the_contract(make, context_shape):
    flow = make()
    assert isinstance(flow, Flow)
    check_bijector(flow.bijector, (3,), context_shape, seed=0)


@pytest.mark.parametrize("function, config", [(maf, MAFConfig), (nsf, NSFConfig)])
def test_function_defaults_match_the_config(function, config):
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    fields = {f.name: f.default for f in dataclasses.fields(config) if f.name != "features"}
    assert defaults == fields


def test_build_from_config_matches_the_function():
    config = MAFConfig(3, transforms=2, hidden_features=[8, 8])
    assert config.hidden_features == (8, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.transforms = 3
    assert _count(build_maf(config)) == _count(maf(3, transforms=2, hidden_features=(8, 8)))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: maf(0), r"features as an int in \[1, 16777216\], got 0"),
        (lambda: maf(2, transforms=0), r"transforms as an int in \[1, 4096\], got 0"),
        (lambda: maf(2, 0), r"context_features as an int in \[1, 16777216\] or None, got 0"),
        (lambda: nsf(1), "features >= 2 to split, got 1"),
        (lambda: nsf(2, hidden_features=()), "at least one hidden layer"),
        (lambda: nsf(3, residual=True), "residual blocks exist only"),
        (lambda: nsf(3, bins=1), r"bins as an int in \[2, 4096\], got 1"),
    ],
)
def test_bad_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: maf(3, transforms=2, hidden_features=(8,), seed=seed),
        lambda seed: nsf(3, transforms=2, hidden_features=(8,), seed=seed),
        lambda seed: flowkit.presets.realnvp_tabular(3, transforms=2, seed=seed),
    ],
    ids=["maf", "nsf", "realnvp_tabular"],
)
def test_a_seed_sets_every_initial_weight(build):
    first = build(3)
    torch.randn(10)  # the global generator moves on between the two builds
    second, other = build(3), build(4)
    pairs = list(zip(first.state_dict().values(), second.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values())
    )


def _count_conditioner_passes(flow):
    """Run-count of every MADE in ``flow``, kept up to date by forward hooks."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1

    for module in flow.modules():
        if isinstance(module, MADE):
            module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("context", [None, 2])
def test_iaf_samples_in_one_pass_per_step_and_scores_points_in_d(context):
    features, transforms = 4, 3
    flow = iaf(features, context, transforms=transforms, hidden_features=(8,), seed=0)
    assert [type(p) for p in flow.bijector][::2] == [InverseAutoregressive] * transforms
    condition = None if context is None else torch.randn(5, context)
    calls = _count_conditioner_passes(flow)
    x, log_q = flow.sample_and_log_prob(None if context else 5, condition)
    assert calls[0] == transforms
    calls[0] = 0
    log_p = flow.log_prob(x, condition)
    assert calls[0] == features * transforms
    torch.testing.assert_close(log_p, log_q, atol=1e-5, rtol=1e-5)
    # MAF is the other way round.
    flow = maf(features, context, transforms=transforms, hidden_features=(8,), seed=0)
    calls = _count_conditioner_passes(flow)
    flow.sample(None if context else 5, condition)
    assert calls[0] == features * transforms


def test_iaf_is_maf_inverse_and_its_config_round_trips():
    config = MAFConfig(3, transforms=2, hidden_features=(8,), inverse=True, seed=1)
    rebuilt = build_model("maf", config_to_dict(config))
    made = iaf(3, transforms=2, hidden_features=(8,), seed=1)
    assert [type(p) for p in rebuilt.bijector] == [type(p) for p in made.bijector]
    x = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.log_prob(x), made.log_prob(x))
    assert _count(made) == _count(maf(3, transforms=2, hidden_features=(8,)))
    with pytest.raises(TypeError, match="inverse"):
        MAFConfig(3, inverse="yes")
