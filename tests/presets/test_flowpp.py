"""Flow++ preset: contract of its flows, the discrete likelihood, sampling, config, size."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit
from flowkit.bijectors import Compose
from flowkit.presets import FlowPPConfig, flowpp
from flowkit.presets.flowpp import flowpp_parameter_count
from flowkit.testing import check_bijector

# The official CIFAR-10 model's parameter count (flows/run_cifar.py's docstring).
OFFICIAL_CIFAR10_PARAMETERS = 31_443_440

TINY = dict(
    input_shape=(1, 4, 4),
    filters=4,
    components=2,
    blocks=1,
    heads=2,
    dropout=0.0,
    couplings=(1, 1, 1),
    dequantizer_couplings=2,
    dequantizer_filters=4,
    dequantizer_blocks=1,
    feature_channels=2,
    feature_blocks=1,
    seed=0,
)


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_main_flow_honours_the_bijector_contract() -> None:
    model = flowpp(**TINY)
    # After the fixed logit preprocessing (checked with Logit), on the whole real line.
    parts = list(model.flow.bijector.bijectors)
    assert [type(part).__name__ for part in parts[:2]] == ["Affine", "Logit"]
    check_bijector(Compose(parts[2:]), (1, 4, 4), check_transform=False)


def test_dequantizer_flow_honours_the_bijector_contract() -> None:
    model = flowpp(**TINY)
    assert model.dequantizer is not None
    # The features of a 1x4x4 image: 2 channels at half width.
    check_bijector(model.dequantizer.bijector, (1, 4, 4), (2, 4, 2), check_transform=False)


def _perturbed(model: torch.nn.Module, scale: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def test_log_prob_is_finite_and_trains_the_dequantizer() -> None:
    model = flowpp(**TINY)
    # Away from the zero start, so that every layer passes gradient on.
    _perturbed(model)
    images = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    flowkit.initialize(model, images)
    log_prob = model.log_prob(images, generator=torch.Generator().manual_seed(1))
    assert log_prob.shape == (5,) and bool(torch.isfinite(log_prob).all())
    # A lower bound on log P(x) of a probability mass function: below 0.
    assert bool((log_prob < 0).all())
    log_prob.sum().backward()
    assert model.dequantizer is not None
    for name, part in (
        ("features", model.dequantizer.features),
        ("couplings", model.dequantizer.bijector),
        ("flow", model.flow),
    ):
        assert part is not None
        norm = sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        assert math.isfinite(norm) and norm > 0, f"no gradient reaches the {name}"


def test_samples_are_integer_images() -> None:
    model = flowpp(**TINY).eval()
    torch.manual_seed(0)
    samples = model.sample(6)
    assert samples.dtype == torch.int64 and samples.shape == (6, 1, 4, 4)
    assert int(samples.min()) >= 0 and int(samples.max()) < 256


def test_without_dequantizer_couplings_dequantization_is_uniform() -> None:
    model = flowpp(**{**TINY, "dequantizer_couplings": 0, "n_bits": 5})
    assert model.dequantizer is None and model.n_bits == 5
    images = torch.randint(0, 32, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    flowkit.initialize(model, images)
    assert bool(torch.isfinite(model.log_prob(images)).all())


def test_the_same_seed_gives_the_same_model() -> None:
    first, second = flowpp(**TINY), flowpp(**TINY)
    other = flowpp(**{**TINY, "seed": 1})
    pairs = list(zip(first.state_dict().values(), second.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values())
    )


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        {**TINY, "input_shape": (3, 8, 12), "couplings": (2, 0, 1), "heads": 1},
        {**TINY, "dequantizer_couplings": 0},
        {**TINY, **FlowPPConfig.STORED_DEFAULTS},
        {**TINY, "split": "checkerboard", "mixing": "whole", "context_mode": "input"},
    ],
    ids=["tiny", "rgb", "uniform", "earlier-design", "mixed-options"],
)
def test_parameter_count_formula_is_exact(config: dict) -> None:
    assert flowpp_parameter_count(FlowPPConfig(**config)) == _count(flowpp(**config))


def _official_parameter_count(config: FlowPPConfig) -> int:
    """The trainable variables of the official TensorFlow model, from their shapes.

    Read off the official code (github.com/aravindsrinivas/flowpp, flows/flows.py and
    flows/run_cifar.py), in its own terms and NHWC shapes: each step is ``Norm`` (``g`` and
    ``b`` of the half's shape ``[H, W, C]``, for each half of the tuple), ``Pointwise`` (a
    ``[C, C]`` matrix for each half) and ``MixLogisticAttnCoupling`` on a half; the dequantizer
    adds the ``shallow_processor``.
    """

    def conv(kernel: int, inputs: int, outputs: int) -> int:  # ``W`` and ``b``
        return kernel * kernel * inputs * outputs + outputs

    def coupling(half: tuple[int, int, int], filters: int, blocks: int, context: int) -> int:
        height, width, channels = half
        count = height * width * filters  # pos_emb
        count += conv(3, channels, filters)  # proj_in
        per_block = conv(3, 2 * filters, filters) + conv(1, 2 * filters, 2 * filters)  # c1, c2
        per_block += conv(1, 2 * context, filters) if context else 0  # a_proj
        per_block += conv(1, filters, 3 * filters) + conv(1, filters, 2 * filters)  # attention
        per_block += 2 * 2 * filters  # ln1, ln2
        count += blocks * per_block
        return count + conv(3, filters, channels * (2 + 3 * config.components))  # proj_out

    def step(half: tuple[int, int, int], filters: int, blocks: int, context: int = 0) -> int:
        height, width, channels = half
        norm_and_pointwise = 2 * (2 * height * width * channels + channels**2)
        return norm_and_pointwise + coupling(half, filters, blocks, context)

    channels, height, width = config.input_shape
    first, middle, last = config.couplings
    f, blocks = config.filters, config.blocks
    count = first * step((height, width // 2, channels), f, blocks)
    count += middle * step((height // 2, width // 2, 2 * channels), f, blocks)
    count += last * step((height // 2, width // 4, 4 * channels), f, blocks)
    if config.dequantizer_couplings:
        features = config.feature_channels
        count += conv(3, 2 * channels, features)  # proj
        count += config.feature_blocks * (
            conv(3, 2 * features, features) + conv(3, 2 * features, 2 * features)
        )
        count += config.dequantizer_couplings * step(
            (height, width // 2, channels),
            config.dequantizer_filters,
            config.dequantizer_blocks,
            features,
        )
    return count


def test_cifar10_model_has_the_official_size() -> None:
    from flowkit.presets.runs import get_run_preset

    config = FlowPPConfig(**get_run_preset("flowpp-cifar10").model)
    assert config == FlowPPConfig(seed=0)  # the preset is the config's defaults
    count = _count(flowpp(**{**get_run_preset("flowpp-cifar10").model, "seed": None}))
    assert count == flowpp_parameter_count(config)
    assert count == _official_parameter_count(config) == OFFICIAL_CIFAR10_PARAMETERS


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        {**TINY, "input_shape": (3, 8, 12), "couplings": (2, 1, 1), "heads": 1},
        {**TINY, "dequantizer_couplings": 0, "components": 3},
    ],
    ids=["tiny", "rgb", "uniform"],
)
def test_the_official_architecture_has_the_same_parameters(config: dict) -> None:
    assert _count(flowpp(**config)) == _official_parameter_count(FlowPPConfig(**config))


def test_earlier_architecture_options_change_the_parameter_count_as_the_formula_says() -> None:
    earlier = {**TINY, "input_shape": (3, 8, 8), **FlowPPConfig.STORED_DEFAULTS}
    count = _count(flowpp(**earlier))
    assert count == flowpp_parameter_count(FlowPPConfig(**earlier))
    assert count != _official_parameter_count(FlowPPConfig(**earlier))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"input_shape": (1, 4, 6)}, ValueError, "width divisible by 4, got 4x6"),
        ({"input_shape": (1, 3, 4)}, ValueError, "height divisible by 2"),
        ({"input_shape": (1, 4)}, ValueError, "input_shape as"),
        ({"filters": 5}, ValueError, "heads to divide filters"),
        (
            {"feature_channels": 3, "feature_network": "conv_attn"},
            ValueError,
            "heads to divide feature_channels",
        ),
        ({"split": "rows"}, ValueError, "split as one of"),
        ({"norm": "batch"}, ValueError, "norm as one of"),
        ({"mixing": "lu"}, ValueError, "mixing as one of"),
        ({"squeeze_order": "tensorflow"}, ValueError, "squeeze_order as one of"),
        ({"context_mode": "concat"}, ValueError, "context_mode as one of"),
        ({"feature_network": "resnet"}, ValueError, "feature_network as one of"),
        ({"tanh_scale": 1}, TypeError, "tanh_scale as a bool"),
        ({"swap_odd_stages": "yes"}, TypeError, "swap_odd_stages as a bool"),
        ({"dequantizer_noise": "uniform"}, ValueError, "dequantizer_noise as one of"),
        ({"components": 0}, ValueError, "components as an int"),
        ({"blocks": 1.5}, TypeError, "blocks as an int"),
        ({"dropout": 1.0}, ValueError, "dropout as a finite number"),
        ({"couplings": (0, 0, 0)}, ValueError, "at least one coupling"),
        ({"couplings": (1, 1)}, ValueError, "couplings as"),
        ({"n_bits": 0}, ValueError, "n_bits as an int"),
        ({"seed": "0"}, TypeError, "seed as an int"),
    ],
)
def test_config_rejects_bad_values(change: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FlowPPConfig(**{**TINY, **change})


def test_config_takes_lists_from_json() -> None:
    config = FlowPPConfig(**{**TINY, "input_shape": [1, 4, 4], "couplings": [1, 1, 1]})
    assert config == FlowPPConfig(**TINY)


def test_dequantizer_features_are_the_official_three_gated_convolutions() -> None:
    import torch.nn.functional as F

    from flowkit.nn import GatedConvNet

    config = {**TINY, "input_shape": (3, 4, 8), "feature_channels": 5, "feature_blocks": 3}
    model = flowpp(**config).eval()
    assert model.dequantizer is not None and model.dequantizer.features is not None
    network = model.dequantizer.features.network
    assert isinstance(network, GatedConvNet)
    # The official shallow processor's variables, as torch shapes (out, in, kh, kw): "proj" on
    # both halves' channels, then per block "c1" (3x3 of concat_elu) and "c2" (3x3, gated).
    expected = [("input.weight", (5, 6, 3, 3)), ("input.bias", (5,))]
    for block in range(3):
        expected += [
            (f"blocks.{block}.conv.weight", (5, 10, 3, 3)),
            (f"blocks.{block}.conv.bias", (5,)),
            (f"blocks.{block}.conv_gate.weight", (10, 10, 3, 3)),
            (f"blocks.{block}.conv_gate.bias", (10,)),
        ]
    assert [(name, tuple(p.shape)) for name, p in network.named_parameters()] == expected
    # Its function, written out as the official gated_conv (use_nin=False, no context).
    _perturbed(network)
    image = torch.rand(2, 3, 4, 8) - 0.5

    def concat_elu(h: torch.Tensor) -> torch.Tensor:
        return F.elu(torch.cat([h, -h], 1))

    weights = dict(network.named_parameters())
    # The official code stacks the even and the odd columns of the image along channels.
    h = torch.cat([image[..., 0::2], image[..., 1::2]], 1)
    h = F.conv2d(h, weights["input.weight"], weights["input.bias"], padding=1)
    for block in range(3):
        w = {key: weights[f"blocks.{block}.{key}"] for key in ("conv.weight", "conv.bias")}
        c1 = concat_elu(F.conv2d(concat_elu(h), w["conv.weight"], w["conv.bias"], padding=1))
        c2 = F.conv2d(
            c1,
            weights[f"blocks.{block}.conv_gate.weight"],
            weights[f"blocks.{block}.conv_gate.bias"],
            padding=1,
        )
        a, b = c2.chunk(2, 1)
        h = h + a * torch.sigmoid(b)
    with torch.no_grad():
        torch.testing.assert_close(model.dequantizer.features(image), h)


def test_the_dequantizer_features_keep_the_state_dict_keys_of_saved_models() -> None:
    # Checkpoints written before the features moved to flowkit.nn hold these names.
    model = flowpp(**TINY)
    keys = [key for key in model.state_dict() if key.startswith("dequantizer.features.")]
    assert keys[0] == "dequantizer.features.split.first_kept"
    assert keys[1:] and all(key.startswith("dequantizer.features.network.") for key in keys[1:])


def test_the_main_flow_is_built_as_the_official_code() -> None:
    from flowkit.bijectors import (
        ActNorm,
        CheckerboardSplit,
        Coupling,
        SplitApply,
        Squeeze,
        SwapHalves,
    )

    model = flowpp(**{**TINY, "input_shape": (3, 4, 8)})
    parts = list(model.flow.bijector.bijectors)
    squeeze = next(part for part in parts if isinstance(part, Squeeze))
    assert squeeze.order == "position_major"
    norms = [part for part in parts if isinstance(part, ActNorm)]
    assert [tuple(norm.log_scale.shape) for norm in norms] == [(3, 4, 8), (12, 2, 4), (12, 2, 4)]
    couplings = [part for part in parts if isinstance(part, Coupling)]
    assert all(c.transform.tanh_scale for c in couplings)
    first = couplings[0].splitter
    assert isinstance(first, CheckerboardSplit) and not first.alternate
    mixing = [part for part in parts if isinstance(part, SplitApply)]
    assert len(mixing) == 3 and all(m.split is c.splitter for m, c in zip(mixing, couplings))
    # One coupling per stage: each stage ends with its halves exchanged (the official merge).
    swaps = [index for index, part in enumerate(parts) if isinstance(part, SwapHalves)]
    assert [type(parts[index - 1]).__name__ for index in swaps] == ["Coupling"] * 3
    # The official Pointwise starts at the identity plus noise of standard deviation 0.001.
    for conv in [m.first for m in mixing] + [m.second for m in mixing]:
        eye = torch.eye(conv.channels)
        distance = (conv.weight - eye).abs().max().item()
        assert 0 < distance < 0.01


def test_a_checkpoint_of_the_earlier_architecture_still_loads(tmp_path) -> None:
    from flowkit.train import save_checkpoint
    from flowkit.train.checkpoint import CHECKPOINT_FORMAT

    # A config stored before the architecture options existed lacks them.
    earlier = FlowPPConfig(**{**TINY, **FlowPPConfig.STORED_DEFAULTS})
    model = flowpp(**{**TINY, **FlowPPConfig.STORED_DEFAULTS})
    _perturbed(model)
    images = torch.randint(0, 256, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    flowkit.initialize(model, images)
    stored = {key: list(v) if isinstance(v, tuple) else v for key, v in TINY.items()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "model_name": "flowpp",
            "model_config": stored,
        },
        path,
    )
    loaded = flowkit.load(path, weights="raw")
    assert isinstance(loaded, type(model))
    model.eval()
    with torch.no_grad():
        expected = model.log_prob(images, generator=torch.Generator().manual_seed(2))
        got = loaded.log_prob(images, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert _count(loaded) == flowpp_parameter_count(earlier)
    # A fresh config without the options is the official architecture.
    from flowkit.presets.registry import config_from_dict

    fresh = config_from_dict("flowpp", stored)
    assert fresh == FlowPPConfig(**TINY) and fresh.tanh_scale and fresh.norm == "position"
