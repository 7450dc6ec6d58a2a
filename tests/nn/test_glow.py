"""Glow's coupling network and learned (class-conditional) top prior."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import flowkit
from flowkit.nn import ActNorm, GlowConditioner, GlowTopPrior


def test_conditioner_starts_at_zero_and_is_initialised_by_initialize() -> None:
    net = GlowConditioner(2, 6, hidden_channels=8)
    x = torch.randn(4, 2, 5, 5) * 3 + 1
    with pytest.warns(UserWarning, match=r"call flowkit.initialize\(flow, batch\)"):
        out = net(x)
    assert out.shape == (4, 6, 5, 5) and torch.equal(out, torch.zeros_like(out))
    norms = [m for m in net.modules() if isinstance(m, ActNorm)]
    assert len(norms) == 2 and not any(bool(m.initialized) for m in norms)
    flowkit.initialize(net, x)
    assert all(bool(m.initialized) for m in norms)
    standardized = net.norm_in.normalize(net.conv_in(x))
    assert_close(standardized.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    assert_close(standardized.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-4, rtol=0)


def _official_top_prior(prior: GlowTopPrior, labels: torch.Tensor | None) -> torch.Tensor:
    """Glow's prior: conv2d_zeros of all-zero input (with the edge channel), plus the class term."""
    channels = 2 * prior.channels
    zeros = torch.zeros((1, channels) + prior.spatial_shape)
    padded = F.pad(zeros, (1, 1, 1, 1))
    edge = F.pad(torch.zeros((1, 1) + prior.spatial_shape), (1, 1, 1, 1), value=1.0)
    conv = prior.conv
    weight = torch.cat([conv.weight, conv.edge_weight], dim=1)
    h = F.conv2d(torch.cat([padded, edge], 1), weight, conv.bias) * torch.exp(3 * conv.log_scale)
    if labels is None:
        return h
    embedding = prior.class_embedding
    one_hot = F.one_hot(labels, prior.num_classes).float()
    class_term = (one_hot @ embedding.weight.T + embedding.bias) * torch.exp(
        3 * embedding.log_scale
    )
    return h + class_term[:, :, None, None]


@pytest.mark.parametrize("num_classes", [None, 3])
def test_top_prior_matches_the_official_construction(num_classes) -> None:
    prior = GlowTopPrior(2, (3, 4), num_classes=num_classes)
    labels = torch.tensor([0, 2]) if num_classes else None
    assert torch.equal(prior(labels), torch.zeros(prior(labels).shape))
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.normal_(std=0.3)
    params = prior(labels)
    assert params.shape == ((2,) if num_classes else (1,)) + (4, 3, 4)
    assert_close(params, _official_top_prior(prior, labels))
    # Learned offsets at the border differ from the interior.
    assert not torch.allclose(params[..., 0, 0], params[..., 1, 1])


def test_top_prior_labels_and_classifier() -> None:
    prior = GlowTopPrior(2, (2, 2), num_classes=4, learn_top=False)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.normal_()
    labels = torch.tensor([3, 1])
    assert_close(prior(labels), prior(F.one_hot(labels, 4).double()))
    z_top = torch.randn(2, 2, 2, 2)
    classifier = prior.classifier
    expected = (z_top.mean((2, 3)) @ classifier.weight.T + classifier.bias) * torch.exp(
        3 * classifier.log_scale
    )
    assert_close(prior.class_logits(z_top), expected)
    with pytest.raises(RuntimeError, match="class-conditional"):
        GlowTopPrior(2, (2, 2)).class_logits(z_top)
    with pytest.raises(ValueError, match="nothing to learn"):
        GlowTopPrior(2, (2, 2), learn_top=False)


def test_actnorm_layer_and_bijector_share_parameters_and_formula() -> None:
    layer, bijector = ActNorm(3), flowkit.bijectors.ActNorm(3)
    assert [n for n, _ in layer.named_parameters()] == ["bias", "log_scale"]
    assert list(layer.state_dict()) == list(bijector.state_dict())
    with torch.no_grad():
        for module in (layer, bijector):
            module.bias.copy_(torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1))
            module.log_scale.copy_(torch.tensor([0.1, -0.2, 0.3]).view(3, 1, 1))
    x = torch.randn(2, 3, 4, 4)
    expected = (x + layer.bias) * torch.exp(3.0 * layer.log_scale)
    assert_close(layer.eval()(x), expected)
    assert_close(bijector.eval()(x)[0], expected)
    scale, shift = layer.folded_scale_and_shift()
    assert_close(scale.view(3, 1, 1) * x + shift.view(3, 1, 1), expected)


def test_networks_import_nothing_from_the_bijectors() -> None:
    # nn/ sits below bijectors/ (which builds on it): no module of flowkit.nn may import upwards.
    upward = []
    for path in sorted(Path(flowkit.nn.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            upward += [f"{path.name}: {n}" for n in names if n.startswith("flowkit.bijectors")]
            upward += [f"{path.name}: {n}" for n in names if n == "flowkit"]
    assert upward == [], upward
