"""Bad input to flows and distributions: errors that name expected and received values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from flowkit import Flow
from flowkit.bijectors import ActNorm, Affine, AffineCoupling, Standardize, channel_mask
from flowkit.distributions import ConditionalDiagonalNormal, StandardNormal
from flowkit.distributions.base import TorchBase, sample_shape_of
from flowkit.nn import MLP, GlowTopPrior
from tests.helpers import raises_with
from tests.registry import glow_like


def _vector_flow() -> Flow:
    return Flow(StandardNormal((3,)), Affine((3,), event_rank=1))


def _conditional_flow() -> Flow:
    coupling = AffineCoupling(MLP(1, 4, context_features=2), channel_mask(3, event_rank=1))
    base = ConditionalDiagonalNormal((3,), MLP(2, 6), context_shape=(2,))
    return Flow(base, coupling)


def test_log_prob_wrong_event_shape() -> None:
    flow = _vector_flow()
    raises_with(
        ValueError, lambda: flow.log_prob(torch.randn(5, 4)), "Flow", "(3)", "(4)", "(5, 4)"
    )
    image_flow = Flow(StandardNormal((64,)), glow_like((1, 8, 8)))
    raises_with(
        ValueError, lambda: image_flow.log_prob(torch.randn(2, 1, 8, 6)), "(1, 8, 8)", "(1, 8, 6)"
    )
    raises_with(ValueError, lambda: image_flow.log_prob(torch.randn(8, 8)), "(1, 8, 8)", "(8, 8)")


def test_log_prob_rejects_integer_data() -> None:
    flow = _vector_flow()
    raises_with(
        TypeError,
        lambda: flow.log_prob(torch.zeros(5, 3, dtype=torch.uint8)),
        "floating-point",
        "torch.uint8",
        "dequantized",
    )
    raises_with(TypeError, lambda: flow.log_prob([[0.0, 1.0, 2.0]]), "torch.Tensor", "list")
    raises_with(
        TypeError,
        lambda: flow.decode(torch.zeros(5, 3, dtype=torch.int32)),
        "latent",
        "torch.int32",
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_log_prob_rejects_non_finite_data(bad: float) -> None:
    x = torch.zeros(4, 3)
    x[2, 1] = bad
    raises_with(
        ValueError, lambda: _vector_flow().log_prob(x), "finite", "1 non-finite", "(2, 1)", str(bad)
    )


def test_flow_context_missing_or_misshapen() -> None:
    flow = _conditional_flow()
    x = torch.randn(5, 3)
    raises_with(ValueError, lambda: flow.log_prob(x), "conditional", "(2,)", "got None")
    raises_with(ValueError, lambda: flow.log_prob(x, torch.randn(5, 4)), "context", "(2)", "(4)")
    raises_with(
        ValueError,
        lambda: flow.log_prob(x, torch.randn(4, 2)),
        "does not broadcast",
        "(4, 2)",
        "(5,)",
    )
    raises_with(ValueError, lambda: flow.sample(3), "got None")


def test_flow_declared_context_shape_without_conditional_parts() -> None:
    flow = Flow(StandardNormal((3,)), Affine((3,), event_rank=1), context_shape=(2,))
    raises_with(ValueError, lambda: flow.log_prob(torch.randn(4, 3)), "(2,)", "got None")


def test_conditional_diagonal_normal_errors() -> None:
    base = ConditionalDiagonalNormal((3,), MLP(2, 6), context_shape=(2,))
    z = torch.randn(4, 3)
    raises_with(
        ValueError, lambda: base.log_prob(z), "ConditionalDiagonalNormal", "(2,)", "got None"
    )
    raises_with(ValueError, lambda: base.log_prob(z, torch.randn(4, 5)), "(2)", "(5)")
    raises_with(ValueError, lambda: base.sample(2), "got None")
    raises_with(
        ValueError,
        lambda: base.log_prob(torch.randn(4, 2), torch.randn(4, 2)),
        "value",
        "(3)",
        "(2)",
    )
    wrong = ConditionalDiagonalNormal((3,), MLP(2, 5), context_shape=(2,))
    raises_with(
        ValueError, lambda: wrong.log_prob(z, torch.randn(4, 2)), "2 * 3 features", "(4, 5)"
    )


def test_class_labels_out_of_range_through_a_flow() -> None:
    flow = Flow(StandardNormal((64,)), glow_like((1, 8, 8), num_classes=3), context_shape=())
    x = torch.rand(2, 1, 8, 8) - 0.5
    raises_with(ValueError, lambda: flow.log_prob(x, torch.tensor([1, 3])), "[0, 3)", "from 1 to 3")
    raises_with(
        ValueError, lambda: flow.sample(None, torch.tensor([-2])), "[0, 3)", "from -2 to -2"
    )
    raises_with(ValueError, lambda: flow.log_prob(x), "expects a context", "got None")


def test_flow_constructor_checks() -> None:
    raises_with(
        TypeError, lambda: Flow(torch.nn.Linear(2, 2), Affine()), "distribution as base", "Linear"
    )
    raises_with(
        TypeError, lambda: Flow(StandardNormal((3,)), torch.nn.Identity()), "Bijector", "Identity"
    )
    # A rank-3 bijector cannot sit on a rank-1 base.
    raises_with(
        ValueError, lambda: Flow(StandardNormal((3,)), ActNorm(3)), "rank 3", "(3,)", "rank 1"
    )
    # The whole model is shape-checked when built.
    raises_with(
        ValueError, lambda: Flow(StandardNormal((5,)), ActNorm(3, event_rank=1)), "(3)", "(5)"
    )
    prior = Standardize(GlowTopPrior(2, (2, 2)), 2)
    raises_with(
        ValueError, lambda: Flow(StandardNormal((3, 2, 2)), prior), "(2, *, *)", "(3, 2, 2)"
    )


def test_torch_base_needs_empty_batch_shape() -> None:
    normal = Normal(torch.zeros(3), torch.ones(3))
    raises_with(
        ValueError,
        lambda: Flow(normal, Affine((3,), event_rank=1)),
        "batch shape (3,)",
        "Independent",
    )
    raises_with(
        TypeError, lambda: TorchBase(torch.zeros(3)), "torch.distributions.Distribution", "Tensor"
    )


def test_latent_structure_errors() -> None:
    flow = Flow(StandardNormal((64,)), glow_like((1, 8, 8)))
    raises_with(ValueError, lambda: flow.decode(torch.randn(2, 63)), "latent", "(64)", "(63)")
    raises_with(ValueError, lambda: flow.unflatten(torch.randn(2, 60)), "(64)", "(60)")
    pieces = flow.unflatten(torch.randn(2, 64))
    raises_with(ValueError, lambda: flow.flatten(pieces[:1]), "2 pieces", "got 1")
    raises_with(
        ValueError,
        lambda: flow.flatten([pieces[0], pieces[1].flatten(1)]),
        "piece",
        "(8, 2, 2)",
        "(2, 32)",
    )


def test_negative_sample_count() -> None:
    raises_with(ValueError, lambda: sample_shape_of(-2), "an int >= 0", "-2")
