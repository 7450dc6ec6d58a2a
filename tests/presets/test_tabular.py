"""Tests of the tabular RealNVP preset: structure, contract, conditioning, a short training run."""

from __future__ import annotations

import pytest
import torch

import flowkit
from flowkit.bijectors import ActNorm, AffineCoupling, BatchNorm
from flowkit.data.toy import two_moons
from flowkit.presets.tabular import realnvp_tabular
from flowkit.testing import check_bijector


def _perturb(module, scale=0.1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


@pytest.mark.parametrize(
    ("normalization", "norm_type"), [("batch", BatchNorm), ("act", ActNorm), (None, None)]
)
def test_structure(normalization, norm_type):
    flow = realnvp_tabular(5, transforms=4, hidden_features=(8,), normalization=normalization)
    parts = list(flow.bijector)
    couplings = [p for p in parts if isinstance(p, AffineCoupling)]
    assert len(couplings) == 4
    # Alternating masks: each feature is transformed by some coupling, and neighbours differ.
    kept = [tuple(c.kept_index.tolist()) for c in couplings]
    assert kept == [(0, 1), (2, 3, 4), (0, 1), (2, 3, 4)]
    norms = [p for p in parts if norm_type is not None and isinstance(p, norm_type)]
    assert len(norms) == (3 if norm_type is not None else 0)
    assert len(parts) == 4 + len(norms)


@pytest.mark.parametrize("normalization", ["batch", "act", None])
def test_bijector_passes_the_contract(normalization):
    flow = realnvp_tabular(3, transforms=3, hidden_features=(8,), normalization=normalization)
    x = torch.randn(64, 3) * 2 + 1
    if normalization == "act":
        flowkit.initialize(flow, x)
    flow(x)
    flow.eval()
    check_bijector(_perturb(flow.bijector), (3,), batch_shape=(4,))


def test_conditional_flow():
    flow = realnvp_tabular(2, 3, transforms=2, hidden_features=(8,), normalization=None)
    _perturb(flow)
    x, context = torch.randn(5, 2), torch.randn(5, 3)
    log_prob = flow.log_prob(x, context)
    assert log_prob.shape == (5,)
    assert not torch.allclose(log_prob, flow.log_prob(x, torch.randn(5, 3)))
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)
    assert flow.sample(4, context=torch.randn(3)).shape == (4, 2)
    check_bijector(flow.bijector, (2,), context_shape=(3,), batch_shape=(3,))


def test_training_on_two_moons_improves_held_out_likelihood():
    torch.manual_seed(0)
    flow = realnvp_tabular(2, transforms=4, hidden_features=(32, 32))
    train = two_moons(1024, generator=torch.Generator().manual_seed(0))
    test = two_moons(1024, generator=torch.Generator().manual_seed(1))

    def held_out():
        flow.eval()
        with torch.no_grad():
            value = flow.log_prob(test).mean().item()
        flow.train()
        return value

    before = held_out()
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    batches = torch.randint(0, 1024, (60, 128), generator=torch.Generator().manual_seed(2))
    for index in batches:
        loss = -flow.log_prob(train[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out()
    assert after > before + 0.4, (before, after)
    flow.eval()
    with torch.no_grad():
        samples = flow.sample(256)
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1,), {}, r"features as an int in \[2, 16777216\], got 1"),
        ((2,), {"transforms": 0}, r"transforms as an int in \[1, 4096\], got 0"),
        ((2,), {"normalization": "layer"}, "normalization in"),
        ((2, 0), {}, r"context_features as an int in \[1, 16777216\] or None, got 0"),
    ],
)
def test_invalid_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        realnvp_tabular(*args, **kwargs)
