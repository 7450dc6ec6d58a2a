"""CausalTransformer: causal, shifted by one position, guided, decoded with a key/value cache."""

from __future__ import annotations

import copy

import pytest
import torch

from flowkit.nn import CausalTransformer


def _perturbed(net: CausalTransformer, seed: int = 0) -> CausalTransformer:
    """The network with every parameter moved, so that the zero output layer hides nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return net.double().eval()


@pytest.mark.parametrize("position", [0, 2, 5])
def test_changing_position_t_changes_no_output_before_t_plus_one(position: int) -> None:
    torch.manual_seed(0)
    net = _perturbed(CausalTransformer(3, 6, 2, channels=16, layers=2, heads=4))
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    changed = x.clone()
    changed[:, position] += torch.randn(4, 3, dtype=torch.float64)
    before, after = net(x), net(changed)
    assert torch.equal(before[:, : position + 1], after[:, : position + 1])
    if position + 1 < 6:
        assert not torch.allclose(before[:, position + 1], after[:, position + 1])


def test_jacobian_is_strictly_block_lower_triangular() -> None:
    torch.manual_seed(1)
    net = _perturbed(CausalTransformer(2, 5, 3, channels=8, layers=1, heads=2))
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: net(v)[0], x)[:, :, 0]
    # (output position, parameter, input position, feature): nonzero only for input < output.
    influence = jacobian.abs().sum(dim=(1, 3))
    later = torch.ones(5, 5).triu().bool()  # [output, input]: input position >= output
    assert torch.all(influence[later] == 0)
    assert torch.all(influence[~later] > 0)


def test_starts_at_zero_with_the_output_layout() -> None:
    net = CausalTransformer(3, 4, 5, channels=8, layers=1, heads=2)
    out = net(torch.randn(2, 4, 3))
    assert out.shape == (2, 4, 15)
    assert torch.equal(out, torch.zeros_like(out))


def test_guidance_mixes_conditional_and_unconditional_parameters() -> None:
    torch.manual_seed(2)
    net = _perturbed(CausalTransformer(2, 4, 2, channels=8, layers=1, heads=2, num_classes=3))
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    labels, null = torch.tensor([0, 1, 2, 1, 0]), torch.full((5,), -1)
    conditional, unconditional = net(x, labels), net(x, null)
    assert not torch.allclose(conditional, unconditional)
    net.guidance = 1.5
    assert torch.allclose(net(x, labels), conditional + 1.5 * (conditional - unconditional))
    net.guidance = 0.0
    # The null class is the mean of the class embeddings: a class equal to it acts the same.
    with torch.no_grad():
        net.class_embedding[0] = net.class_embedding.mean(0)  # type: ignore[index,union-attr]
    assert torch.allclose(net(x, torch.zeros(5).long()), unconditional)


def test_training_mode_drops_no_label() -> None:
    # Label dropout is drawn once per example by the trainer; the network itself is deterministic.
    torch.manual_seed(3)
    net = _perturbed(CausalTransformer(2, 4, 2, channels=8, layers=1, heads=2, num_classes=3))
    x = torch.randn(50, 4, 2, dtype=torch.float64)
    labels = torch.randint(0, 3, (50,))
    expected = net(x, labels)
    net.train()
    assert torch.equal(net(x, labels), expected)


def _guided_net() -> CausalTransformer:
    torch.manual_seed(4)
    return _perturbed(CausalTransformer(2, 5, 2, channels=8, layers=2, heads=2, num_classes=3))


def test_annealed_guidance_ramps_the_weight_over_the_positions() -> None:
    net = _guided_net()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    labels, null = torch.tensor([0, 2, 1]), torch.full((3,), -1)
    conditional, unconditional = net(x, labels), net(x, null)
    net.guidance, net.annealed_guidance = 2.0, True
    ramp = 2.0 * torch.arange(5, dtype=torch.float64).view(5, 1) / 4
    expected = conditional + ramp * (conditional - unconditional)
    assert torch.allclose(net(x, labels), expected, atol=1e-12)
    assert torch.allclose(net(x, labels)[:, -1], (3 * conditional - 2 * unconditional)[:, -1])


@pytest.mark.parametrize("guided", [(0,), (1,)])
def test_guided_parameters_leave_the_others_conditional(guided: tuple[int, ...]) -> None:
    net = _guided_net()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    conditional, unconditional = net(x, labels), net(x, torch.full((3,), -1))
    net.guidance, net.guided_parameters = 1.5, guided
    out = net(x, labels).unflatten(-1, (2, 2))  # (N, T, element, parameter)
    full = (conditional + 1.5 * (conditional - unconditional)).unflatten(-1, (2, 2))
    other = 1 - guided[0]
    assert torch.allclose(out[..., guided[0]], full[..., guided[0]])
    assert torch.equal(out[..., other], conditional.unflatten(-1, (2, 2))[..., other])


def test_attention_temperature_divides_the_unconditional_logits() -> None:
    net = _guided_net()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    labels, null = torch.tensor([0, 2, 1]), torch.full((3,), -1)
    conditional = net(x, labels)
    # Dividing the logits by tau is dividing the queries by tau: a copy with scaled query weights.
    tempered = copy.deepcopy(net)
    with torch.no_grad():
        for block in tempered.blocks:
            block.attention.qkv.weight[:8] /= 0.5  # type: ignore[index,operator]
            block.attention.qkv.bias[:8] /= 0.5  # type: ignore[index,operator]
    unconditional = tempered(x, null)
    assert not torch.allclose(unconditional, net(x, null))
    net.guidance, net.attention_temperature = 1.5, 0.5
    assert torch.allclose(net(x, labels), conditional + 1.5 * (conditional - unconditional))
    net.attention_temperature = 1.0
    default = net(x, labels)
    assert torch.allclose(default, conditional + 1.5 * (conditional - net(x, null)))
    # Without guidance the temperature has nothing to act on.
    net.guidance, net.attention_temperature = 0.0, 0.5
    assert torch.equal(net(x, labels), conditional)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"guidance": 2.0},
        {"guidance": 1.5, "annealed_guidance": True, "attention_temperature": 0.7},
        {"guidance": 1.0, "guided_parameters": (1,)},
    ],
    ids=["conditional", "guided", "annealed-tempered", "guide-one"],
)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_incremental_decoder_gives_forward_one_position_at_a_time(
    settings: dict, num_classes: int | None
) -> None:
    torch.manual_seed(5)
    net = _perturbed(
        CausalTransformer(3, 6, 2, channels=8, layers=2, heads=2, num_classes=num_classes)
    )
    for name, value in settings.items():
        setattr(net, name, value)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    labels = None if num_classes is None else torch.tensor([0, 2, 1, -1])
    expected = net(x, labels)
    decode = net.incremental_decoder(labels, 4)
    steps = [decode(None)] + [decode(x[:, t]) for t in range(5)]
    assert torch.allclose(torch.stack(steps, 1), expected, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="all 6 positions"):
        decode(x[:, 5])
    fresh = net.incremental_decoder(labels, 4)
    with pytest.raises(ValueError, match="None for the first position"):
        fresh(x[:, 0])
    fresh(None)
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        fresh(x[:2, 0])


def test_errors_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="divisible by heads"):
        CausalTransformer(2, 4, channels=10, heads=4)
    with pytest.raises(ValueError, match="num_classes"):
        CausalTransformer(2, 4, channels=8, heads=2, num_classes=1)
    net = CausalTransformer(2, 4, channels=8, heads=2, num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(N, 4, 2\)"):
        net(torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match="got None"):
        net(torch.randn(3, 4, 2))
    with pytest.raises(TypeError, match="integer class labels"):
        net(torch.randn(3, 4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="without num_classes"):
        CausalTransformer(2, 4, channels=8, heads=2)(torch.randn(3, 4, 2), torch.zeros(3).long())
