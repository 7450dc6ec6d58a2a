"""Bad input to the public API: each gets a clear error naming what was expected and what came."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal
from torch.distributions.transforms import AffineTransform, ExpTransform, ReshapeTransform

from flowkit import Flow, from_transform
from flowkit._tensors import set_validation, validation_enabled
from flowkit.bijectors import Affine, AffineCoupling, channel_mask
from flowkit.distributions import (
    ConditionalDiagonalNormal,
    DiagonalNormal,
    MixtureOfGaussians,
    StandardNormal,
    UniformBox,
)
from flowkit.distributions.base import TorchBase
from flowkit.latent import attribute_direction, interpolate, manipulate
from flowkit.nn import MLP
from flowkit.presets import glow, maf, nsf, realnvp
from flowkit.presets.glow import GlowConfig, _parameter_count
from flowkit.presets.realnvp import _parameter_count as realnvp_parameter_count
from flowkit.presets.tabular import realnvp_tabular
from flowkit.presets.vector import MAFConfig, NSFConfig
from tests.helpers import raises_with
from tests.registry import glow_like

IMAGE = (1, 8, 8)


def _image_flow(num_classes: int | None = None) -> Flow:
    torch.manual_seed(0)
    context_shape = None if num_classes is None else ()
    return Flow(
        StandardNormal((64,)),
        glow_like(IMAGE, num_classes=num_classes),
        context_shape=context_shape,
    )


def _vector_flow() -> Flow:
    torch.manual_seed(0)
    return maf(3, transforms=2, hidden_features=(8,))


def _conditional_flow() -> Flow:
    torch.manual_seed(0)
    coupling = AffineCoupling(MLP(1, 4, context_features=2), channel_mask(3, event_rank=1))
    base = ConditionalDiagonalNormal((3,), MLP(2, 6), context_shape=(2,))
    return Flow(base, coupling)


# --- dtype and device ----------------------------------------------------------------------------
def test_float64_input_to_float32_flow_names_both_dtypes_and_the_fix() -> None:
    flow = _image_flow()
    x = torch.rand(2, *IMAGE, dtype=torch.float64) - 0.5
    fragments = ("torch.float32", "torch.float64", "x.float()", "flow.double()")
    raises_with(TypeError, lambda: flow.log_prob(x), "Flow.log_prob", *fragments)
    raises_with(TypeError, lambda: flow.encode(x), "Flow.encode", *fragments)
    z = torch.randn(2, 64, dtype=torch.float64)
    raises_with(TypeError, lambda: flow.decode(z), "Flow.decode", "latent", *fragments)
    # After the suggested fix the same input works.
    assert flow.double().log_prob(x).dtype == torch.float64


def test_float_context_must_match_the_flow_dtype() -> None:
    flow = _conditional_flow()
    context = torch.randn(4, 2, dtype=torch.float64)
    for call in (
        lambda: flow.sample_and_log_prob(None, context),
        lambda: flow.sample(2, context),
        lambda: flow.log_prob(torch.randn(4, 3), context),
    ):
        raises_with(TypeError, call, "context", "torch.float32", "torch.float64", "x.float()")


def test_flow_without_parameters_accepts_any_float_dtype() -> None:
    flow = Flow(StandardNormal((3,)), from_transform(AffineTransform(0.5, 2.0)))
    assert list(flow.parameters()) == []
    x = torch.randn(4, 3, dtype=torch.float64)
    log_prob = flow.log_prob(x)
    assert log_prob.dtype == torch.float64
    # z = 0.5 + 2 x elementwise: log p(x) = sum log N(z) + 3 log 2.
    brute = (Normal(0.0, 1.0).log_prob(0.5 + 2.0 * x) + math.log(2.0)).sum(-1)
    torch.testing.assert_close(log_prob, brute)


def test_meta_input_to_cpu_flow_names_both_devices() -> None:
    flow = _image_flow()
    x = torch.empty(2, *IMAGE, device="meta")
    for call in (flow.log_prob, flow.encode):
        raises_with(
            ValueError, lambda call=call: call(x), "device cpu", "on meta", "flow.to('meta')"
        )
    raises_with(ValueError, lambda: flow.decode(torch.empty(2, 64, device="meta")), "cpu", "meta")


def test_meta_flow_infers_shapes_on_meta_input() -> None:
    flow = _image_flow().to("meta")
    x = torch.empty(5, *IMAGE, device="meta")
    log_prob = flow.log_prob(x)
    assert log_prob.shape == (5,) and log_prob.device.type == "meta"
    assert flow.encode(x).shape == (5, 64)
    assert flow.sample(3).shape == (3, *IMAGE)


# --- empty batches -------------------------------------------------------------------------------
def test_empty_batch_gives_empty_results() -> None:
    flow = _image_flow()
    x = torch.rand(0, *IMAGE) - 0.5
    assert flow.log_prob(x).shape == (0,)
    assert flow.encode(x).shape == (0, 64)
    assert flow.decode(torch.randn(0, 64)).shape == (0, *IMAGE)
    assert flow.sample(0).shape == (0, *IMAGE)
    samples, log_prob = flow.sample_and_log_prob((0, 3))
    assert samples.shape == (0, 3, *IMAGE) and log_prob.shape == (0, 3)
    vector = _vector_flow()
    assert vector.log_prob(torch.randn(0, 3)).shape == (0,)
    assert vector.sample_and_log_prob(0)[1].shape == (0,)


def test_empty_batch_still_checks_shapes_and_context() -> None:
    raises_with(ValueError, lambda: _image_flow().log_prob(torch.zeros(0, 1, 8, 6)), "(1, 8, 6)")
    conditional = _conditional_flow()
    assert conditional.log_prob(torch.randn(0, 3), torch.randn(0, 2)).shape == (0,)
    raises_with(ValueError, lambda: conditional.log_prob(torch.randn(0, 3)), "got None")


# --- sample counts and temperatures --------------------------------------------------------------
ALLOWED_COUNTS = "an int >= 0, a shape tuple of ints >= 0, or None"


@pytest.mark.parametrize(
    "n, error, shown",
    [
        (2.5, TypeError, "2.5"),
        (True, TypeError, "True"),
        ("3", TypeError, "'3'"),
        ((2, 1.5), TypeError, "(2, 1.5)"),
        (-1, ValueError, "-1"),
        ((2, -3), ValueError, "(2, -3)"),
    ],
    ids=["float", "bool", "str", "float-in-shape", "negative", "negative-in-shape"],
)
def test_bad_sample_counts(n: object, error: type[Exception], shown: str) -> None:
    flow = _vector_flow()
    raises_with(error, lambda: flow.sample(n), "Flow.sample", ALLOWED_COUNTS, shown)
    raises_with(error, lambda: flow.sample_and_log_prob(n), "sample_and_log_prob", shown)
    raises_with(error, lambda: StandardNormal((2,)).sample(n), "StandardNormal.sample", shown)


def test_valid_sample_counts() -> None:
    flow = _vector_flow()
    assert flow.sample(torch.Size([2, 3])).shape == (2, 3, 3)
    assert flow.sample([4]).shape == (4, 3)
    assert flow.sample(None).shape == (3,)


def _samplers() -> dict[str, object]:
    conditional = ConditionalDiagonalNormal((2,), MLP(3, 4), context_shape=(3,))
    return {
        "Flow.sample": lambda t: _vector_flow().sample(2, temperature=t),
        "Flow.sample_and_log_prob": lambda t: _vector_flow().sample_and_log_prob(2, temperature=t),
        "StandardNormal": lambda t: StandardNormal((2,)).sample(2, temperature=t),
        "DiagonalNormal": lambda t: DiagonalNormal((2,)).sample(2, temperature=t),
        "ConditionalDiagonalNormal": lambda t: conditional.sample(2, torch.randn(3), temperature=t),
        "MixtureOfGaussians": lambda t: MixtureOfGaussians((2,), 2, seed=0).sample(
            2, temperature=t
        ),
        "UniformBox": lambda t: UniformBox(0.0, 1.0, (2,)).sample(2, temperature=t),
        "TorchBase": lambda t: TorchBase(Normal(0.0, 1.0)).sample(2, temperature=t),
    }


@pytest.mark.parametrize("name", list(_samplers()))
@pytest.mark.parametrize(
    "bad", [-0.5, math.inf, math.nan, "1"], ids=["negative", "inf", "nan", "str"]
)
def test_bad_temperatures(name: str, bad: object) -> None:
    error = TypeError if isinstance(bad, str) else ValueError
    raises_with(
        error, lambda: _samplers()[name](bad), "temperature", "a finite number >= 0", repr(bad)[:4]
    )


def test_temperature_zero_gives_the_mode() -> None:
    flow = Flow(DiagonalNormal((3,)), Affine((3,), event_rank=1, shift=1.5))
    with torch.no_grad():
        flow.base.mean.fill_(0.25)
    samples = flow.sample(4, temperature=0)
    # Affine maps x to z = x + 1.5, so the data mode is the base mean minus the shift.
    torch.testing.assert_close(samples, torch.full((4, 3), 0.25 - 1.5))


# --- context on an unconditional flow ------------------------------------------------------------
def test_context_on_unconditional_flow_is_refused() -> None:
    flow = _vector_flow()
    labels = torch.tensor([0, 1])
    fragments = ("unconditional", "context_shape None", "got a context", "build the Flow with")
    raises_with(ValueError, lambda: flow.log_prob(torch.randn(2, 3), context=labels), *fragments)
    raises_with(ValueError, lambda: flow.encode(torch.randn(2, 3), labels), *fragments)
    raises_with(ValueError, lambda: flow.decode(torch.randn(2, 3), labels), *fragments)
    raises_with(ValueError, lambda: flow.sample(2, labels), "Flow.sample", *fragments)
    raises_with(ValueError, lambda: flow.distribution(labels).sample(), *fragments)


# --- preset configs ------------------------------------------------------------------------------
SMALL_GLOW = {"K": 1, "L": 1, "input_shape": (1, 4, 4), "hidden_channels": 4}


@pytest.mark.parametrize(
    "field, value, error, fragments",
    [
        ("hidden_channels", -4, ValueError, ("hidden_channels", "-4", "an int in [1, 65536]")),
        ("K", 1.5, TypeError, ("K", "1.5", "float", "an int in [1, 4096]")),
        ("K", "2", TypeError, ("K", "'2'", "str")),
        ("K", True, TypeError, ("K", "True", "bool")),
        ("K", 10**6, ValueError, ("K", "1000000", "[1, 4096]")),
        ("L", 0, ValueError, ("L", "got 0")),
        ("hidden_channels", 10**6, ValueError, ("hidden_channels", "1000000")),
        ("input_shape", (1, -8, -8), ValueError, ("input_shape", "(C, H, W)", "(1, -8, -8)")),
        ("input_shape", (1, 8), ValueError, ("input_shape", "(C, H, W)", "(1, 8)")),
        ("input_shape", (1, 8.0, 8), TypeError, ("input_shape", "8.0", "float")),
        ("input_shape", 8, TypeError, ("input_shape", "8", "int")),
        ("num_classes", 1, ValueError, ("num_classes", "[2, 1048576] or None", "got 1")),
        ("num_classes", 2.0, TypeError, ("num_classes", "2.0")),
        ("class_weight", -0.1, ValueError, ("class_weight", ">= 0.0", "-0.1")),
        ("class_weight", math.nan, ValueError, ("class_weight", "finite", "nan")),
        ("class_weight", "0.1", TypeError, ("class_weight", "'0.1'")),
        ("learn_top", 1, TypeError, ("learn_top", "True or False", "1")),
        ("memory_saving", "yes", TypeError, ("memory_saving", "'yes'")),
        ("seed", 1.0, TypeError, ("seed", "1.0")),
        ("seed", 2**70, ValueError, ("seed", str(2**70))),
        ("coupling", 1, ValueError, ("coupling", "('affine', 'additive')", "got 1")),
        ("conditioner_dtype", "float64", ValueError, ("conditioner_dtype", "'float64'")),
    ],
)
def test_glow_config_fields(
    field: str, value: object, error: type[Exception], fragments: tuple[str, ...]
) -> None:
    raises_with(error, lambda: glow(**{**SMALL_GLOW, field: value}), "GlowConfig", *fragments)
    raises_with(error, lambda: GlowConfig(**{**SMALL_GLOW, field: value}), *fragments)


def test_glow_parameter_estimate_catches_absurd_sizes_before_building() -> None:
    message = raises_with(
        ValueError,
        lambda: glow(K=4096, hidden_channels=8192),
        "K=4096",
        "hidden_channels=8192",
        "parameters",
        "limit",
    )
    assert "e+" in message


@pytest.mark.parametrize(
    "config",
    [
        dict(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16),
        dict(K=1, L=2, input_shape=(2, 4, 4), hidden_channels=4, num_classes=3),
        dict(K=3, L=3, input_shape=(3, 16, 16), hidden_channels=32, coupling="additive"),
    ],
    ids=["small", "class-conditional", "additive"],
)
def test_glow_parameter_estimate_is_within_a_factor_of_two(config: dict) -> None:
    flow = glow(**config, seed=0)
    actual = sum(p.numel() for p in flow.parameters())
    assert actual / 2 <= _parameter_count(flow.config) <= 2 * actual


def test_glow_config_from_a_json_list_is_normalised() -> None:
    config = GlowConfig(**{**SMALL_GLOW, "input_shape": [1, 4, 4]})
    assert config.input_shape == (1, 4, 4)
    assert config == GlowConfig(**SMALL_GLOW)


@pytest.mark.parametrize(
    "build, fragments, error",
    [
        (lambda: MAFConfig(2.0), ("MAFConfig", "features", "2.0"), TypeError),
        (lambda: MAFConfig(True), ("features", "True", "bool"), TypeError),
        (lambda: MAFConfig(2, context_features=1.5), ("context_features", "1.5"), TypeError),
        (lambda: MAFConfig(2, transforms=-1), ("transforms", "-1"), ValueError),
        (lambda: MAFConfig(2, transforms=10**6), ("transforms", "1000000"), ValueError),
        (lambda: MAFConfig(2, hidden_features=(8, 2.5)), ("hidden_features", "2.5"), TypeError),
        (lambda: MAFConfig(2, hidden_features=(8, 0)), ("hidden_features", "(8, 0)"), ValueError),
        (lambda: MAFConfig(2, hidden_features=8), ("hidden_features", "8"), TypeError),
        (lambda: MAFConfig(2, residual="no"), ("residual", "'no'"), TypeError),
        (lambda: MAFConfig(2, scale_fn="relu"), ("scale_fn", "'relu'"), ValueError),
        (
            lambda: MAFConfig(10**6, hidden_features=(4096,)),
            ("features=1000000", "parameters", "limit"),
            ValueError,
        ),
        (lambda: NSFConfig(2, bins=2.0), ("NSFConfig", "bins", "2.0"), TypeError),
        (lambda: NSFConfig(2, bins=10**5), ("bins", "100000"), ValueError),
        (lambda: NSFConfig(2, tail_bound=0.0), ("tail_bound", "> 0.0", "0.0"), ValueError),
        (lambda: NSFConfig(2, tail_bound=math.inf), ("tail_bound", "inf"), ValueError),
        (lambda: NSFConfig(2, tail_bound="3"), ("tail_bound", "'3'"), TypeError),
        (lambda: NSFConfig(2, actnorm=0), ("actnorm", "0"), TypeError),
        (lambda: maf(3, hidden_features=(8, -1)), ("hidden_features", "(8, -1)"), ValueError),
        (lambda: nsf(3, transforms=2.0), ("transforms", "2.0"), TypeError),
    ],
)
def test_vector_config_fields(build, fragments: tuple[str, ...], error: type[Exception]) -> None:
    raises_with(error, build, *fragments)


@pytest.mark.parametrize(
    "kwargs, fragments, error",
    [
        (dict(input_shape=(1, -8, -8)), ("input_shape", "(1, -8, -8)"), ValueError),
        (dict(input_shape=(1, 8, 8.0)), ("input_shape", "8.0"), TypeError),
        (dict(levels=1.0), ("levels", "1.0"), TypeError),
        (dict(levels=99), ("levels", "99"), ValueError),
        (dict(hidden_channels=True), ("hidden_channels", "True"), TypeError),
        (dict(blocks=-1), ("blocks", "-1"), ValueError),
        (dict(blocks=2.0), ("blocks", "2.0"), TypeError),
        (dict(logit_alpha=0.5), ("logit_alpha", "< 0.5", "0.5"), ValueError),
        (dict(logit_alpha=-0.1), ("logit_alpha", "> 0.0", "-0.1"), ValueError),
        (dict(weight_norm="yes"), ("weight_norm", "'yes'"), TypeError),
        (
            dict(hidden_channels=30000, blocks=8),
            ("hidden_channels=30000", "blocks=8", "parameters"),
            ValueError,
        ),
    ],
)
def test_realnvp_arguments(
    kwargs: dict, fragments: tuple[str, ...], error: type[Exception]
) -> None:
    raises_with(
        error, lambda: realnvp(**{"input_shape": (1, 8, 8), **kwargs}), "realnvp", *fragments
    )


def test_realnvp_parameter_estimate_is_within_a_factor_of_two() -> None:
    flow = realnvp((1, 8, 8), levels=2, hidden_channels=4, blocks=1)
    actual = sum(p.numel() for p in flow.parameters())
    assert actual / 2 <= realnvp_parameter_count((1, 8, 8), 2, 4, 1) <= 2 * actual


@pytest.mark.parametrize(
    "args, kwargs, fragments, error",
    [
        ((2.0,), {}, ("features", "2.0"), TypeError),
        ((4, True), {}, ("context_features", "True"), TypeError),
        ((4,), dict(transforms=0.5), ("transforms", "0.5"), TypeError),
        ((4,), dict(hidden_features=(16, 1.5)), ("hidden_features", "1.5"), TypeError),
        ((4,), dict(hidden_features=(16, 0)), ("hidden_features", "(16, 0)"), ValueError),
        ((4,), dict(normalization=None), None, None),
        ((10**6,), dict(hidden_features=(8192,)), ("features=1000000", "parameters"), ValueError),
    ],
)
def test_realnvp_tabular_arguments(args, kwargs, fragments, error) -> None:
    if error is None:
        assert realnvp_tabular(*args, **kwargs).event_shape == (4,)
        return
    raises_with(error, lambda: realnvp_tabular(*args, **kwargs), "realnvp_tabular", *fragments)


# --- torch transforms wrapped as bijectors -------------------------------------------------------
def test_reshape_transform_with_a_wrong_shape_names_both() -> None:
    bijector = from_transform(ReshapeTransform((4,), (2, 2)))
    raises_with(ValueError, lambda: bijector(torch.zeros(3, 5)), "ReshapeTransform", "(4)", "(5)")
    raises_with(
        ValueError, lambda: bijector.inverse(torch.zeros(3, 2, 3)), "latent", "(2, 2)", "(2, 3)"
    )
    assert bijector(torch.zeros(3, 4))[0].shape == (3, 2, 2)


def test_transform_values_are_checked_against_domain_and_codomain() -> None:
    bijector = from_transform(ExpTransform())
    raises_with(
        ValueError,
        lambda: bijector.inverse(torch.tensor([2.0, -1.0])),
        "from_transform(ExpTransform)",
        "GreaterThan(lower_bound=0.0)",
        "index (1,)",
        "-1.0",
    )
    log_transform = from_transform(ExpTransform().inv)
    raises_with(ValueError, lambda: log_transform(torch.tensor([-3.0])), "GreaterThan", "-3.0")
    assert validation_enabled()
    set_validation(False)
    try:
        # Validation off: the value goes through to torch, which returns NaN.
        assert torch.isnan(bijector.inverse(torch.tensor([-1.0]))[0]).all()
    finally:
        set_validation(True)


# --- latent-space operations ---------------------------------------------------------------------
def test_interpolate_arguments() -> None:
    flow = _image_flow()
    x = torch.rand(2, *IMAGE) - 0.5
    raises_with(ValueError, lambda: interpolate(flow, x[0], x[1], steps=1), "steps", "[2,", "1")
    raises_with(TypeError, lambda: interpolate(flow, x[0], x[1], steps=2.5), "steps", "2.5")
    raises_with(
        ValueError,
        lambda: interpolate(flow, x[0], x[1, :, :, :6], steps=3),
        "x_b",
        "(1, 8, 8)",
        "(1, 8, 6)",
    )
    raises_with(
        ValueError,
        lambda: interpolate(flow, x[:1], x[1], steps=3),
        "x_a",
        "no batch",
        "(1, 1, 8, 8)",
    )
    raises_with(TypeError, lambda: interpolate(torch.nn.Identity(), x[0], x[1]), "Flow", "Identity")
    assert interpolate(flow, x[0], x[1], steps=3).shape == (3, *IMAGE)


def test_attribute_direction_arguments() -> None:
    flow = _image_flow()
    x = torch.rand(4, *IMAGE) - 0.5
    mask = torch.tensor([True, False, True, False])
    raises_with(
        TypeError,
        lambda: attribute_direction(flow, x, torch.tensor([1, 0, 2, 0])),
        "bool tensor",
        "torch.int64",
        "labels == k",
    )
    raises_with(
        ValueError,
        lambda: attribute_direction(flow, x, torch.ones(4, dtype=torch.bool)),
        "with and without",
        "4 with and 0 without",
    )
    raises_with(ValueError, lambda: attribute_direction(flow, x, mask[:3]), "one flag", "(3,)")
    raises_with(ValueError, lambda: attribute_direction(flow, x[0], mask), "(N, 1, 8, 8)")
    raises_with(TypeError, lambda: attribute_direction(flow, x, mask, batch_size=0.5), "batch_size")
    assert attribute_direction(flow, x, mask).shape == (64,)


def test_manipulate_arguments() -> None:
    flow = _image_flow()
    x = torch.rand(*IMAGE) - 0.5
    direction = torch.randn(64)
    raises_with(
        ValueError, lambda: manipulate(flow, x, direction, (0.0, math.nan)), "scales[1]", "nan"
    )
    raises_with(ValueError, lambda: manipulate(flow, x, direction, (math.inf,)), "scales[0]")
    raises_with(TypeError, lambda: manipulate(flow, x, direction, ()), "non-empty", "()")
    raises_with(TypeError, lambda: manipulate(flow, x, direction, "abc"), "'abc'")
    raises_with(ValueError, lambda: manipulate(flow, x, direction[:10]), "(64,)", "(10,)")
    raises_with(ValueError, lambda: manipulate(flow, x[None], direction), "x", "(1, 1, 8, 8)")
    assert manipulate(flow, x, direction, (0.0, 1.0)).shape == (2, *IMAGE)
