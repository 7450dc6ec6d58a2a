"""CausalTransformer: causal in the sequence, shifted by one position, guided and label-dropped."""

from __future__ import annotations

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


def test_label_dropout_only_while_training_with_autograd() -> None:
    torch.manual_seed(3)
    net = _perturbed(
        CausalTransformer(2, 4, 2, channels=8, layers=1, heads=2, num_classes=3, label_dropout=0.5)
    )
    x = torch.randn(200, 4, 2, dtype=torch.float64)
    labels = torch.randint(0, 3, (200,))
    conditional, unconditional = net(x, labels), net(x, torch.full((200,), -1))
    net.train()
    with torch.no_grad():
        assert torch.allclose(net(x, labels), conditional)
    out = net(x, labels)
    dropped = torch.isclose(out, unconditional).flatten(1).all(-1)
    kept = torch.isclose(out, conditional).flatten(1).all(-1)
    assert torch.all(dropped ^ kept)
    assert 60 < int(dropped.sum()) < 140


def test_errors_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="divisible by heads"):
        CausalTransformer(2, 4, channels=10, heads=4)
    with pytest.raises(ValueError, match="label_dropout"):
        CausalTransformer(2, 4, channels=8, heads=2, num_classes=3, label_dropout=1.0)
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
