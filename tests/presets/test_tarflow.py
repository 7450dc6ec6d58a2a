"""TarFlow: the assembled map, its triangular structure, sampling with guidance, denoising."""

from __future__ import annotations

import math

import pytest
import torch

from flowkit.bijectors import Affine, Compose
from flowkit.distributions import Dequantized, Flow, StandardNormal
from flowkit.nn import CausalTransformer
from flowkit.presets import TarFlowConfig, build_model, config_from_dict, denoise, tarflow
from flowkit.presets.runs import RUN_PRESETS
from flowkit.testing import check_bijector
from flowkit.train.data import as_training_data
from flowkit.train.distributed import Process

TINY = dict(channels=8, blocks=2, layers_per_block=1, heads=2, seed=0)


def _perturb(flow: Flow, seed: int = 0, scale: float = 0.1) -> Flow:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return flow.double().eval()


@pytest.mark.parametrize("num_classes", [None, 3])
def test_whole_map_passes_the_bijector_contract(num_classes: int | None) -> None:
    flow = tarflow((1, 4, 8), 2, num_classes=num_classes, **TINY)
    context = None if num_classes is None else torch.tensor([0, 2, 1])
    check_bijector(
        flow.bijector.eval(), (1, 4, 8), context=context, requires_context=num_classes is not None
    )


def _jacobian(bijector, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of one event's output with respect to its input, as a (T*d, T*d) matrix."""
    size = x.numel()
    return torch.autograd.functional.jacobian(lambda v: bijector(v[None])[0][0], x).reshape(
        size, size
    )


def _block_pattern(jacobian: torch.Tensor, length: int) -> torch.Tensor:
    """Which (output patch, input patch) blocks of the Jacobian are nonzero."""
    features = jacobian.shape[0] // length
    blocks = jacobian.reshape(length, features, length, features).abs().sum(dim=(1, 3))
    return blocks > 0


def test_jacobian_is_block_triangular_in_patch_order() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, **TINY))
    patchify, first, flip, second, last_flip = flow.bijector
    x = torch.randn(4, 4, dtype=torch.float64)
    lower = torch.ones(4, 4).tril().bool()
    # The first block: patch t depends on patches <= t, and on its own only elementwise.
    jacobian = _jacobian(first, x)
    assert torch.equal(_block_pattern(jacobian, 4), lower)
    diagonal = jacobian.reshape(4, 4, 4, 4).diagonal(dim1=0, dim2=2)  # (d, d, T)
    assert torch.all(diagonal.permute(2, 0, 1)[:, ~torch.eye(4, dtype=torch.bool)] == 0)
    # The second block runs on the reversed sequence: in patch order it is upper triangular.
    assert torch.equal(_block_pattern(_jacobian(Compose(flip, second, last_flip), x), 4), lower.T)
    # Together the blocks are dense, so the flow is not triangular in any one order.
    assert bool(_block_pattern(_jacobian(Compose(first, flip, second), x), 4).all())


def test_log_det_is_the_sum_of_log_scales_and_inverse_recovers_x() -> None:
    flow = _perturb(tarflow((2, 4, 4), 2, **TINY))
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64) - 0.5
    z, log_abs_det = flow.bijector(x)
    brute = [torch.linalg.slogdet(_jacobian(flow.bijector, row))[1] for row in x]
    assert torch.allclose(log_abs_det, torch.stack(brute))
    with torch.no_grad():
        assert torch.allclose(flow.decode(z), x, atol=1e-10)


def test_denoise_is_tweedie_for_a_gaussian_model() -> None:
    # Clean points x0 ~ N(mu, s0^2) seen through noise sigma: the noisy density is
    # N(mu, s0^2 + sigma^2), a flow that is exactly Gaussian, and E[x0 | x] is known.
    generator = torch.Generator().manual_seed(0)
    mu, s0, sigma = 1.5, 0.5, 0.4
    total = math.sqrt(s0**2 + sigma**2)
    model = Flow(
        StandardNormal((2,)), Affine((2,), shift=-mu / total, scale=1 / total, event_rank=1)
    ).double()
    clean = mu + s0 * torch.randn(4000, 2, generator=generator)
    noisy = (clean + sigma * torch.randn(4000, 2, generator=generator)).double()
    denoised = denoise(model, noisy, sigma)
    posterior_mean = mu + s0**2 / total**2 * (noisy - mu)
    assert torch.allclose(denoised, posterior_mean, atol=1e-12)
    error = ((denoised - clean) ** 2).mean()
    assert error < 0.8 * ((noisy - clean) ** 2).mean()
    assert not denoised.requires_grad


def test_sample_denoises_with_the_training_noise() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, noise_std=0.1, **TINY))
    torch.manual_seed(5)
    raw = flow.sample(3, denoise=False).detach()
    torch.manual_seed(5)
    cleaned = flow.sample(3)
    # 0.1 in the model's range [-1, 1] is 0.05 in the flow's input range [-1/2, 1/2].
    assert flow.training_noise_std == 0.05
    assert torch.allclose(cleaned, denoise(flow, raw, 0.05))
    assert not torch.allclose(cleaned, raw)
    flow.train()
    modes = [module.training for module in flow.modules()]
    torch.manual_seed(5)
    assert torch.allclose(flow.sample(3), cleaned)  # label dropout never touches the score
    assert [module.training for module in flow.modules()] == modes


def _draw(flow: Flow, labels: torch.Tensor | None, n: int | None = None, **options) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return flow.sample(n, context=labels, **options)


def test_guidance_weight_zero_is_conditional_sampling() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, num_classes=3, **TINY))
    labels = torch.tensor([0, 1, 2, 2])
    plain = _draw(flow, labels)
    assert torch.equal(_draw(flow, labels, guidance=0.0), plain)
    # Options that shape the guidance do nothing without it.
    unguided = dict(annealed_guidance=True, guide_what="a", attention_temperature=0.5)
    assert torch.equal(_draw(flow, labels, **unguided), plain)
    guided = _draw(flow, labels, guidance=2.0)
    assert not torch.allclose(guided, plain)
    # Guidance acts in decoding only: the density is the model's afterwards.
    assert all(module.guidance == 0.0 for module in flow.modules() if hasattr(module, "guidance"))
    # Decoding the guided sample with the guided map gives back its latent.
    torch.manual_seed(7)
    z = flow.base.sample(4)
    with flow.decoding(2.0), torch.no_grad():
        assert torch.allclose(flow.bijector(flow.decode(z, labels), labels)[0], z, atol=1e-9)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"guidance": 2.0},
        {"guidance": 1.5, "annealed_guidance": True, "guide_what": "b"},
        {"guidance": 1.0, "guide_what": "a", "attention_temperature": 0.6},
    ],
    ids=["conditional", "guided", "annealed-shifts", "scales-tempered"],
)
def test_the_key_value_cache_samples_what_the_full_passes_sample(options: dict) -> None:
    flow = _perturb(tarflow((2, 4, 8), 2, num_classes=3, **TINY), scale=0.05)
    labels = torch.tensor([0, 1, 2, 2, 1])
    cached = _draw(flow, labels, **options)
    full = _draw(flow, labels, cache=False, **options)
    assert torch.allclose(cached, full, rtol=0, atol=1e-12)
    assert all(block.incremental for block in flow.modules() if hasattr(block, "incremental"))


def test_annealed_guidance_ramps_over_each_blocks_positions() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, num_classes=3, **TINY))
    labels = torch.tensor([0, 1, 2])
    plain, guided = _draw(flow, labels), _draw(flow, labels, guidance=2.0)
    annealed = _draw(flow, labels, guidance=2.0, annealed_guidance=True)
    assert not torch.allclose(annealed, plain) and not torch.allclose(annealed, guided)
    # Position 1 of the first decoded block (the last block) gets w / (T - 1); a map guided with
    # that weight throughout decodes it alike, and later positions differently.
    torch.manual_seed(7)
    z = flow.base.sample(3)
    last = flow.bijector[-2]
    with torch.no_grad():
        with flow.decoding(2.0, annealed_guidance=True):
            ramped = last.inverse(z, labels)[0]
        with flow.decoding(2.0 / 3):
            constant = last.inverse(z, labels)[0]
    assert torch.allclose(ramped[:, :2], constant[:, :2], atol=1e-12)
    assert not torch.allclose(ramped[:, 2:], constant[:, 2:])


@pytest.mark.parametrize(("guide_what", "parameter"), [("b", 0), ("a", 1)])
def test_guide_what_guides_the_shifts_or_the_log_scales(guide_what: str, parameter: int) -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, num_classes=3, **TINY))
    labels = torch.tensor([0, 1, 2])
    plain = _draw(flow, labels)
    both = _draw(flow, labels, guidance=2.0)
    assert not torch.allclose(_draw(flow, labels, guidance=2.0, guide_what=guide_what), both)
    # With that parameter (0: shift, 1: log-scale; entry j * 2 + p) the same for every class,
    # there is nothing left for guide_what to guide.
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, CausalTransformer):
                module.output.weight[parameter::2] = 0.0
                module.output.bias[parameter::2] = 0.1
    assert torch.allclose(
        _draw(flow, labels, guidance=2.0, guide_what=guide_what), _draw(flow, labels)
    )
    assert not torch.allclose(_draw(flow, labels), plain)


def test_a_model_without_classes_is_guided_against_its_tempered_attention() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, **TINY))
    plain = _draw(flow, None, 3)
    assert torch.equal(_draw(flow, None, 3, attention_temperature=0.5), plain)
    tempered = _draw(flow, None, 3, guidance=1.0, attention_temperature=0.5)
    assert not torch.allclose(tempered, plain)
    assert torch.allclose(
        _draw(flow, None, 3, guidance=1.0, attention_temperature=0.5, cache=False),
        tempered,
        atol=1e-12,
    )


def test_guidance_needs_a_class_conditional_model() -> None:
    flow = tarflow((1, 4, 4), 2, **TINY)
    with pytest.raises(ValueError, match="class-conditional"):
        flow.sample(2, guidance=1.0)
    conditional = tarflow((1, 4, 4), 2, num_classes=3, **TINY)
    label = torch.tensor([0])
    for options, error, match in [
        (dict(guidance=-1), ValueError, "guidance"),
        (dict(guidance=float("nan")), ValueError, "guidance"),
        (dict(attention_temperature=0.0), ValueError, "attention_temperature"),
        (dict(attention_temperature=float("inf")), ValueError, "attention_temperature"),
        (dict(guide_what="c"), ValueError, "guide_what as one of 'ab', 'a', 'b', got 'c'"),
        (dict(guide_what=""), ValueError, "guide_what"),
        (dict(annealed_guidance=1), TypeError, "annealed_guidance as a bool"),
        (dict(cache="yes"), TypeError, "cache as a bool"),
    ]:
        with pytest.raises(error, match=match):
            conditional.sample(context=label, **options)
    assert all(
        module.guidance == 0.0 for module in conditional.modules() if hasattr(module, "guidance")
    )


def test_labels_are_dropped_once_per_example_from_the_training_generator() -> None:
    flow = _perturb(tarflow((1, 4, 4), 2, num_classes=3, label_dropout=0.3, **TINY))
    assert flow.training_label_dropout == 0.3
    assert tarflow((1, 4, 4), 2, **TINY).training_label_dropout is None
    images = torch.randint(0, 256, (400, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(400) % 3
    data = as_training_data((images.to(torch.uint8), labels))
    data.check_against(Dequantized(flow), "training")
    index = torch.arange(400)
    levels, noise, dropped, _ = data.batch(index, torch.Generator().manual_seed(2), Process())
    again = data.batch(index, torch.Generator().manual_seed(2), Process())[2]
    assert torch.equal(dropped, again)  # the training generator alone decides: resumes exactly
    model = Dequantized(flow)
    with torch.no_grad():
        conditional = model.latent_and_log_prob(levels, labels, noise=noise)[0]
        unconditional = model.latent_and_log_prob(levels, torch.full_like(labels, -1), noise=noise)[
            0
        ]
        flow.train()
        trained = model.latent_and_log_prob(levels, dropped, noise=noise)[0]
    is_conditional = torch.isclose(trained, conditional, rtol=0, atol=1e-12).flatten(1).all(1)
    is_unconditional = torch.isclose(trained, unconditional, rtol=0, atol=1e-12).flatten(1).all(1)
    assert torch.all(is_conditional ^ is_unconditional)
    # 400 draws at p = 0.3: 120 expected, standard deviation 9.2; five of them either side.
    assert 74 < int(is_unconditional.sum()) < 166
    assert torch.equal(dropped[~is_unconditional], labels[~is_unconditional])
    # Evaluation batches keep every label.
    assert torch.equal(data._inputs(index, torch.Generator().manual_seed(2))[2], labels)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        (dict(input_shape=(1, 6, 8), patch_size=4), ValueError, "divisible by patch_size=4"),
        (dict(channels=10, heads=4), ValueError, "divisible by heads"),
        (dict(blocks=0), ValueError, "blocks"),
        (dict(patch_size=2.0), TypeError, "patch_size"),
        (dict(num_classes=1), ValueError, "num_classes"),
        (dict(label_dropout=1.0), ValueError, "label_dropout"),
        (dict(noise_std=-0.1), ValueError, "noise_std"),
        (dict(input_shape=(3, 64)), ValueError, "input_shape"),
        (dict(channels=65536, layers_per_block=64), ValueError, "parameters"),
    ],
)
def test_config_validation(changes: dict, error: type, match: str) -> None:
    settings = dict(input_shape=(1, 8, 8), patch_size=2, channels=8, heads=2)
    settings.update(changes)
    with pytest.raises(error, match=match):
        TarFlowConfig(**settings)


def test_registry_rebuilds_the_model_and_the_run_presets_are_valid() -> None:
    flow = build_model("tarflow", dict(input_shape=[1, 4, 4], patch_size=2, **TINY))
    assert flow.config == TarFlowConfig(input_shape=(1, 4, 4), patch_size=2, **TINY)
    for name in ("tarflow-small", "tarflow-imagenet64"):
        preset = RUN_PRESETS[name]
        assert preset.model_name == "tarflow"
        config = config_from_dict("tarflow", preset.model)
        length, features = config.sequence_shape
        assert length * features == math.prod(config.input_shape)


# --- the official data range, as a scaling inside the flow ----------------------------------------
@pytest.mark.parametrize("perturbed", [False, True], ids=["at-init", "trained"])
def test_the_official_range_is_a_scaling_whose_log_det_is_counted(perturbed: bool) -> None:
    # The same network on flowkit's range [-1/2, 1/2] (data_scale 1) and on the official [-1, 1],
    # built in float64 so that the fixed scale's log(2) is stored exactly.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        official = tarflow((2, 4, 4), 2, **TINY).eval()
        plain = tarflow((2, 4, 4), 2, data_scale=1.0, **TINY).eval()
    finally:
        torch.set_default_dtype(default)
    if perturbed:
        official, plain = _perturb(official), _perturb(plain)
    assert official.config.data_scale == 2.0
    levels = torch.randint(0, 256, (5, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    noise = torch.rand(
        levels.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    model = Dequantized(official)
    with torch.no_grad():
        bits = model.bits_per_dim(levels, noise=[noise])
        y, _ = model.dequantize(levels, noise)
        dims = y[0].numel()
        # The plain network applied to 2y, plus the scaling's log-det D log 2.
        log_density = plain.log_prob(2 * y) + dims * math.log(2.0)
    expected = (-log_density + dims * 8 * math.log(2.0)) / (dims * math.log(2.0))
    assert torch.allclose(bits, expected, rtol=0, atol=1e-10)
    # A model on the official range is not the model on flowkit's: the numbers differ.
    with torch.no_grad():
        assert not torch.allclose(Dequantized(plain).bits_per_dim(levels, noise=[noise]), bits)


def test_the_official_noise_is_added_at_half_its_size_in_flowkits_range() -> None:
    flow = tarflow((1, 4, 4), 2, noise_std=0.05, **TINY)
    assert flow.config.noise_std == 0.05 and flow.training_noise_std == 0.025
    plain = tarflow((1, 4, 4), 2, noise_std=0.05, data_scale=1.0, **TINY)
    assert plain.training_noise_std == 0.05


def test_a_config_stored_before_data_scale_rebuilds_the_earlier_range() -> None:
    from flowkit.presets.registry import config_from_stored, config_to_dict

    earlier = tarflow((1, 4, 4), 2, data_scale=1.0, **TINY).eval()
    stored = {k: v for k, v in config_to_dict(earlier.config).items() if k != "data_scale"}
    config = config_from_stored("tarflow", stored)
    assert config.data_scale == 1.0
    rebuilt = build_model("tarflow", config).eval()
    rebuilt.load_state_dict(earlier.state_dict())  # the same layout, strictly
    x = torch.rand(3, 1, 4, 4) - 0.5
    with torch.no_grad():
        assert torch.equal(rebuilt.log_prob(x), earlier.log_prob(x))
    # A config stored since holds its data_scale, the official range by default.
    current = config_to_dict(tarflow((1, 4, 4), 2, **TINY).config)
    assert config_from_stored("tarflow", current).data_scale == 2.0
