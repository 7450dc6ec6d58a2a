"""Bad input to bijectors: ValueError/TypeError messages that name expected and received values."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import flowkit
from flowkit.bijectors import (
    ActNorm,
    AdditiveCoupling,
    Affine,
    AffineCoupling,
    Compose,
    Elementwise,
    Exp,
    FactorOut,
    Flatten,
    Inverse,
    InvertibleConv1x1,
    LeakyReLU,
    Logit,
    Permute,
    Reshape,
    Sigmoid,
    Squeeze,
    Standardize,
    channel_mask,
    checkerboard_mask,
)
from flowkit.nn import MLP, GlowConditioner, GlowTopPrior, ZeroConv2d
from tests.helpers import raises_with


# --- shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_actnorm_wrong_channel_count(direction: str) -> None:
    norm = ActNorm(3)
    raises_with(
        ValueError,
        lambda: getattr(norm, direction)(torch.randn(2, 4, 5, 5)),
        "ActNorm",
        "(3, *, *)",
        "(4, 5, 5)",
        "latent" if direction == "inverse" else "input",
    )
    raises_with(ValueError, lambda: norm.forward_shape((2, 4, 5, 5)), "(3, *, *)", "(4, 5, 5)")


def test_actnorm_vector_wrong_features() -> None:
    raises_with(ValueError, lambda: ActNorm(3, event_rank=1)(torch.randn(2, 5)), "(3)", "(5)")


def test_too_few_dimensions() -> None:
    raises_with(ValueError, lambda: ActNorm(3)(torch.randn(3, 4)), "at least 3 dims", "(3, 4)")
    raises_with(ValueError, lambda: Squeeze().forward_shape((4, 4)), "at least 3", "(4, 4)")


@pytest.mark.parametrize("lu", [True, False], ids=["lu", "dense"])
def test_conv1x1_wrong_channel_count(lu: bool) -> None:
    conv = InvertibleConv1x1(4, lu=lu)
    raises_with(ValueError, lambda: conv(torch.randn(2, 3, 4, 4)), "(4, *, *)", "(3, 4, 4)")
    raises_with(ValueError, lambda: conv.inverse(torch.randn(2, 5, 4, 4)), "latent", "(5, 4, 4)")


def test_coupling_wrong_channel_count() -> None:
    coupling = AffineCoupling(GlowConditioner(2, 4, hidden_channels=4), channel_mask(4))
    raises_with(
        ValueError,
        lambda: coupling(torch.randn(2, 6, 4, 4)),
        "AffineCoupling",
        "(4, *, *)",
        "(6, 4, 4)",
    )
    vector = AdditiveCoupling(MLP(2, 2), channel_mask(4, event_rank=1))
    raises_with(
        ValueError, lambda: vector.inverse(torch.randn(3, 5)), "AdditiveCoupling", "(4)", "(5)"
    )


def test_checkerboard_coupling_wrong_spatial_size() -> None:
    coupling = AffineCoupling(GlowConditioner(2, 4, hidden_channels=4), checkerboard_mask(4, 4))
    raises_with(ValueError, lambda: coupling(torch.randn(2, 2, 4, 6)), "(*, 4, 4)", "(2, 4, 6)")


@pytest.mark.parametrize("event_rank", [1, 3])
def test_permute_wrong_channel_count(event_rank: int) -> None:
    permute = Permute.reverse(3, event_rank=event_rank)
    x = torch.randn((2, 4) + (2,) * (event_rank - 1))
    raises_with(
        ValueError, lambda: permute(x), "Permute", "(3", f"({', '.join(map(str, x.shape[1:]))})"
    )


def test_squeeze_odd_spatial_size() -> None:
    message = raises_with(
        ValueError, lambda: Squeeze()(torch.randn(1, 2, 5, 4)), "divisible by 2", "5x4"
    )
    assert "(1, 2, 5, 4)" in message
    raises_with(ValueError, lambda: Squeeze(3)(torch.randn(1, 2, 6, 4)), "divisible by 3", "6x4")
    raises_with(
        ValueError, lambda: Squeeze().inverse(torch.randn(1, 6, 2, 2)), "divisible by 4", "got 6"
    )


def test_reshape_and_flatten_wrong_event_shape() -> None:
    raises_with(ValueError, lambda: Reshape((2, 3), (6,))(torch.randn(4, 3, 2)), "(2, 3)", "(3, 2)")
    raises_with(ValueError, lambda: Flatten((2, 2, 2)).inverse(torch.randn(4, 9)), "(8)", "(9)")


def test_factor_out_wrong_event_shape() -> None:
    factor_out = FactorOut((4, 2, 2), InvertibleConv1x1(2))
    raises_with(ValueError, lambda: factor_out(torch.randn(3, 4, 2, 4)), "(4, 2, 2)", "(4, 2, 4)")
    raises_with(ValueError, lambda: factor_out.inverse(torch.randn(3, 15)), "(16)", "(15)")


# --- dtypes and values --------------------------------------------------------------------------
@pytest.mark.parametrize("bijector", [Sigmoid(), Exp(), Affine(), LeakyReLU()], ids=str)
def test_elementwise_rejects_integer_input(bijector: Elementwise) -> None:
    raises_with(TypeError, lambda: bijector(torch.arange(4)), "floating-point", "torch.int64")
    raises_with(
        TypeError, lambda: bijector.inverse(torch.ones(4, dtype=torch.uint8)), "torch.uint8"
    )


def test_logit_input_outside_unit_interval() -> None:
    x = torch.tensor([0.25, 1.5, 0.5, -0.5])
    raises_with(
        ValueError, lambda: Logit()(x), "Logit", "Interval", "2 outside", "index (1,)", "1.5"
    )
    raises_with(ValueError, lambda: Sigmoid().inverse(x), "Sigmoid", "latent", "index (1,)")


def test_value_checks_can_be_switched_off() -> None:
    x = torch.tensor([0.5, 1.5])
    flowkit.set_validation(False)
    try:
        z, _ = Logit()(x)
    finally:
        flowkit.set_validation(True)
    assert bool(torch.isnan(z[1]))
    with pytest.raises(ValueError):
        Logit()(x)


def test_conditioner_returning_wrong_channel_count() -> None:
    # Split mode: 2 transformed channels need 4 outputs (shift and scale each).
    coupling = AffineCoupling(ZeroConv2d(2, 3), channel_mask(4))
    raises_with(
        ValueError,
        lambda: coupling(torch.randn(2, 4, 4, 4)),
        "must return 4 channels",
        "(2, 3, 4, 4)",
    )
    # Mask mode: all 4 channels, 2 parameters each.
    checker = AffineCoupling(ZeroConv2d(4, 4), checkerboard_mask(4, 4))
    raises_with(
        ValueError,
        lambda: checker.inverse(torch.randn(2, 4, 4, 4)),
        "must return 8 channels",
        "(2, 4, 4, 4)",
    )
    additive = AdditiveCoupling(MLP(2, 3), channel_mask(4, event_rank=1))
    raises_with(ValueError, lambda: additive(torch.randn(5, 4)), "must return 2 channels", "(5, 3)")


def test_prior_returning_wrong_channel_count() -> None:
    factor_out = FactorOut((4, 2, 2), InvertibleConv1x1(2), ZeroConv2d(2, 3))
    raises_with(
        ValueError,
        lambda: factor_out(torch.randn(3, 4, 2, 2)),
        "2 * 2 = 4 channels",
        "(3, 3, 2, 2)",
    )
    standardize = Standardize(GlowTopPrior(2, (2, 2)), 3)
    raises_with(
        ValueError,
        lambda: standardize(torch.randn(3, 3, 2, 2)),
        "2 * 3 = 6 channels",
        "(1, 4, 2, 2)",
    )


# --- context ------------------------------------------------------------------------------------
def test_coupling_missing_or_wrong_context() -> None:
    coupling = AffineCoupling(MLP(2, 4, context_features=3), channel_mask(4, event_rank=1))
    x = torch.randn(5, 4)
    raises_with(ValueError, lambda: coupling(x), "3 features", "got None")
    raises_with(ValueError, lambda: coupling(x, torch.randn(5, 2)), "3 features", "(5, 2)")


def test_class_conditional_prior_labels() -> None:
    standardize = Standardize(GlowTopPrior(2, (2, 2), num_classes=4), 2)
    x = torch.randn(3, 2, 2, 2)
    raises_with(ValueError, lambda: standardize(x), "4 classes", "got None")
    message = raises_with(ValueError, lambda: standardize(x, torch.tensor([0, 4, 1])), "[0, 4)")
    assert re.search(r"from 0 to 4", message), message
    raises_with(
        ValueError, lambda: standardize(x, torch.tensor([-1, 0, 1])), "[0, 4)", "from -1 to 1"
    )
    raises_with(ValueError, lambda: standardize(x, torch.randn(3, 5)), "(batch, 4)", "(3, 5)")


# --- constructors -------------------------------------------------------------------------------
def test_mask_must_have_both_parts() -> None:
    net = MLP(2, 4)
    raises_with(
        ValueError,
        lambda: AffineCoupling(net, torch.ones(4, dtype=torch.bool)),
        "both True and False",
    )
    raises_with(
        ValueError,
        lambda: AdditiveCoupling(net, torch.zeros(4, dtype=torch.bool)),
        "both True and False",
    )
    raises_with(TypeError, lambda: AffineCoupling(net, torch.ones(4)), "bool mask", "torch.float32")
    raises_with(
        TypeError, lambda: AffineCoupling(lambda x: x, channel_mask(4)), "nn.Module", "function"
    )


def test_unknown_scale_function() -> None:
    raises_with(
        ValueError,
        lambda: AffineCoupling(MLP(2, 4), channel_mask(4, event_rank=1), scale_fn="relu"),
        "'relu'",
        "['exp', 'sigmoid', 'softplus']",
    )


@pytest.mark.parametrize("permutation", [[0, 0, 2], [1, 2, 3], [[0, 1], [1, 0]]], ids=str)
def test_permute_rejects_non_permutations(permutation) -> None:
    raises_with(ValueError, lambda: Permute(permutation), "permutation of range", str(permutation))


def test_reshape_rejects_different_sizes() -> None:
    raises_with(ValueError, lambda: Reshape((2, 3), (4, 2)), "(2, 3) (6)", "(4, 2) (8)")


def test_bad_scalar_arguments() -> None:
    raises_with(ValueError, lambda: Affine(scale=0.0), "positive scale", "0.0")
    raises_with(ValueError, lambda: Logit(0.5), "0 <= alpha < 0.5", "0.5")
    raises_with(ValueError, lambda: LeakyReLU(-0.1), "negative_slope > 0", "-0.1")
    raises_with(ValueError, lambda: Sigmoid(event_rank=-1), "event_rank >= 0", "-1")
    raises_with(ValueError, lambda: ActNorm(0), "channels >= 1", "0")
    raises_with(ValueError, lambda: InvertibleConv1x1(0), "channels >= 1", "0")
    raises_with(ValueError, lambda: Squeeze(0), "factor >= 1", "0")
    raises_with(ValueError, lambda: Permute([0, 1], event_rank=0), "event_rank >= 1", "0")


def test_compose_and_inverse_take_bijectors() -> None:
    raises_with(
        TypeError, lambda: Compose(Exp(), nn.Linear(2, 2)), "Bijector parts", "Linear", "position 1"
    )
    raises_with(TypeError, lambda: Inverse(nn.Identity()), "Bijector", "Identity")


def test_factor_out_arguments() -> None:
    raises_with(
        ValueError,
        lambda: FactorOut((4, 2, 2), InvertibleConv1x1(2), kept_channels=4),
        "0 < kept_channels < 4",
        "got 4",
    )
    raises_with(
        TypeError, lambda: FactorOut((4, 2, 2), nn.Identity()), "Bijector as inner", "Identity"
    )
    raises_with(
        ValueError, lambda: FactorOut((4,), InvertibleConv1x1(2)), "event rank 3", "kept part's 1"
    )
    # The inner bijector is shape-checked against the kept part when the model is built.
    raises_with(
        ValueError, lambda: FactorOut((4, 2, 2), InvertibleConv1x1(3)), "(3, *, *)", "(2, 2, 2)"
    )


def test_actnorm_initialisation_needs_two_values_per_channel() -> None:
    norm = ActNorm(3, event_rank=1)
    raises_with(
        ValueError,
        lambda: flowkit.initialize(norm, torch.randn(1, 3)),
        "at least 2 values",
        "got 1",
        "(1, 3)",
    )
    assert not bool(norm.initialized)
