"""torch.compile traces whole flows: log_prob and sample without graph breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowkit
from flowkit import Flow
from flowkit.bijectors import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    Flatten,
    InvertibleConv1x1,
    Logit,
    channel_mask,
)
from flowkit.distributions import ConditionalDiagonalNormal, StandardNormal
from flowkit.nn import MLP, GlowConditioner
from tests.registry import glow_like


def _glow_flow() -> tuple[Flow, torch.Tensor, torch.Tensor]:
    flow = Flow(StandardNormal((64,)), glow_like((1, 8, 8), num_classes=3), context_shape=())
    x, labels = torch.rand(4, 1, 8, 8) - 0.5, torch.tensor([0, 1, 2, 1])
    return flowkit.initialize(flow, x, labels), x, labels


def _mixed_flow() -> tuple[Flow, torch.Tensor, torch.Tensor]:
    # Parts the Glow-like flow lacks: a validated domain (Logit), a dense 1x1 convolution, an
    # additive coupling, a flattening step, a vector coupling and a base that read the context.
    bijector = Compose(
        Logit(0.05),
        ActNorm(2),
        InvertibleConv1x1(2, lu=False),
        AdditiveCoupling(GlowConditioner(1, 1, hidden_channels=4), channel_mask(2)),
        Flatten((2, 4, 4)),
        AffineCoupling(
            MLP(16, 32, (8,), context_features=3, activation=nn.Tanh),
            channel_mask(32, event_rank=1),
            scale_fn="exp",
        ),
    )
    base = ConditionalDiagonalNormal((32,), MLP(3, 64, (8,)), context_shape=(3,))
    x, context = torch.rand(4, 2, 4, 4), torch.randn(4, 3)
    return flowkit.initialize(Flow(base, bijector), x, context), x, context


def _glow_preset_flow() -> tuple[Flow, torch.Tensor, torch.Tensor]:
    # The preset as users build it: channels-last networks with ActNorm folded into their weights,
    # bfloat16 coupling networks, a learned class-conditional top prior.
    from flowkit.presets import glow

    flow = glow(
        K=2,
        L=2,
        input_shape=(1, 8, 8),
        hidden_channels=8,
        num_classes=3,
        conditioner_dtype="bfloat16",
        seed=0,
    )
    x, labels = torch.rand(4, 1, 8, 8) - 0.5, torch.tensor([0, 1, 2, 1])
    return flowkit.initialize(flow, x, labels), x, labels


def _explain_breaks(function, *args) -> str:
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(function)(*args)
    finally:
        torch._dynamo.reset()
    reasons = "\n".join(str(reason) for reason in explanation.break_reasons)
    assert explanation.graph_count >= 1, "nothing was traced"
    return (
        f"{explanation.graph_break_count} graph break(s):\n{reasons}"
        if (explanation.graph_break_count)
        else ""
    )


@pytest.mark.parametrize(
    "make", [_glow_flow, _mixed_flow, _glow_preset_flow], ids=["glow-like", "mixed", "glow-preset"]
)
def test_log_prob_compiles_without_graph_breaks(make) -> None:
    flow, x, context = make()
    breaks = _explain_breaks(flow.log_prob, x, context)
    assert not breaks, breaks


@pytest.mark.parametrize(
    "make", [_glow_flow, _mixed_flow, _glow_preset_flow], ids=["glow-like", "mixed", "glow-preset"]
)
def test_sample_compiles_without_graph_breaks(make) -> None:
    flow, _, context = make()
    with torch.no_grad():
        breaks = _explain_breaks(flow.sample, None, context, 0.7)
    assert not breaks, breaks


def test_compiled_log_prob_equals_eager() -> None:
    flow, x, labels = _glow_flow()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(flow.log_prob, backend="eager", fullgraph=True)
        assert torch.allclose(compiled(x, labels), flow.log_prob(x, labels), atol=1e-5)
    finally:
        torch._dynamo.reset()
