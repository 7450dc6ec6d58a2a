"""Spectral normalisation and Lipschitz networks: the bound holds, the power iteration is fixed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import jacrev, vmap

from flowkit.nn import (
    LipschitzConvNet,
    LipschitzMLP,
    LipSwish,
    SpectralNormConv2d,
    SpectralNormLinear,
    refresh_spectral_norm,
)
from flowkit.testing.strategies import seeds

# Relative slack on the bound: the power iteration converges to the top singular value from below,
# so after refreshing the estimate is exact to about this precision in float64.
SLACK = 1e-6

coefficients = st.floats(0.3, 0.99)


def _scramble(module: torch.nn.Module, seed: int, scale: float) -> None:
    """Move every weight far from its initialisation, so the old vectors are stale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)


@given(
    inputs=st.integers(1, 6),
    outputs=st.integers(1, 6),
    c=coefficients,
    seed=seeds(),
    scale=st.floats(0.1, 5.0),
)
def test_linear_spectral_norm_is_at_most_c(inputs, outputs, c, seed, scale) -> None:
    torch.manual_seed(seed)
    layer = SpectralNormLinear(inputs, outputs, coefficient=c).double()
    _scramble(layer, seed, scale)
    refresh_spectral_norm(layer, 500)
    sigma = float(torch.linalg.matrix_norm(layer.weight.detach(), 2))
    estimate = float(layer.spectral_norm())
    # From below, and slowly where the top two singular values nearly coincide (see the conv test).
    assert sigma * 0.99 <= estimate <= sigma * (1 + SLACK), (estimate, sigma)
    norm = float(torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2))
    assert norm <= c * (sigma / estimate) * (1 + SLACK), (norm, c, sigma, estimate)
    # Below the bound the weight is left alone.
    unconstrained = float(torch.linalg.matrix_norm(layer.weight, 2))
    if unconstrained < c * (1 - 1e-3):
        torch.testing.assert_close(layer.normalized_weight(), layer.weight)


@given(c=coefficients, seed=seeds(), kernel=st.sampled_from([1, 3]), size=st.integers(2, 4))
def test_conv_operator_norm_is_at_most_c(c, seed, kernel, size) -> None:
    torch.manual_seed(seed)
    conv = SpectralNormConv2d(2, 3, kernel, input_size=(size, size + 1), coefficient=c).double()
    _scramble(conv, seed, 2.0)
    refresh_spectral_norm(conv, 500)

    def operator_norm(weight: torch.Tensor) -> float:
        def operator(flat: torch.Tensor) -> torch.Tensor:
            image = flat.reshape(1, 2, size, size + 1)
            return torch.nn.functional.conv2d(image, weight, padding=kernel // 2).flatten()

        zero = torch.zeros(2 * size * (size + 1)).double()
        matrix = torch.autograd.functional.jacobian(operator, zero)
        return float(torch.linalg.matrix_norm(matrix, 2))

    sigma, estimate = operator_norm(conv.weight.detach()), float(conv.spectral_norm())
    # The power iteration approaches the operator norm from below; where the top two singular
    # values nearly coincide it converges slowly, so the bound holds to the estimate's accuracy.
    assert sigma * 0.99 <= estimate <= sigma * (1 + SLACK), (estimate, sigma)
    norm = operator_norm(conv.normalized_weight().detach())
    assert norm <= c * (sigma / estimate) * (1 + SLACK), (norm, c, sigma, estimate)


@given(c=coefficients, seed=seeds(), activation=st.sampled_from(["lipswish", "elu", "tanh"]))
def test_mlp_lipschitz_constant_is_below_c(c, seed, activation) -> None:
    torch.manual_seed(seed)
    net = LipschitzMLP(3, (16, 16), coefficient=c, activation=activation).double()
    _scramble(net, seed, 1.0)
    refresh_spectral_norm(net, 500)
    generator = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(64, 3, generator=generator, dtype=torch.float64)
    y = x + torch.randn(64, 3, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        ratios = (net(x) - net(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    jacobians = vmap(jacrev(net))(x)
    largest = torch.linalg.matrix_norm(jacobians, 2).max()
    assert float(ratios.max()) < c and float(largest) < c, (float(ratios.max()), float(largest))


def test_lipswish_is_one_lipschitz() -> None:
    activation = LipSwish().double()
    x = torch.linspace(-20, 20, 4001, dtype=torch.float64, requires_grad=True)
    for raw_beta in (-3.0, 0.0, 0.5, 3.0, 10.0):
        with torch.no_grad():
            activation.raw_beta.fill_(raw_beta)
        (slope,) = torch.autograd.grad(activation(x).sum(), x)
        assert float(slope.abs().max()) <= 1.0, raw_beta
    # The divisor is tight: the steepest slope is within 1% of 1 for a large beta.
    assert float(slope.abs().max()) > 0.99


def test_vectors_move_only_when_the_weight_changes_in_training() -> None:
    layer = SpectralNormLinear(4, 4, coefficient=0.5)
    x = torch.randn(3, 4)
    u = layer.u.clone()
    first, second = layer(x), layer(x)
    assert torch.equal(first, second) and torch.equal(layer.u, u)
    with torch.no_grad():
        layer.weight.mul_(-1).add_(torch.randn(4, 4))
    layer(x)
    assert not torch.equal(layer.u, u)
    # Evaluation mode uses the stored vectors as they are.
    layer.eval()
    moved = layer.u.clone()
    with torch.no_grad():
        layer.weight.add_(torch.randn(4, 4))
    layer(x)
    assert torch.equal(layer.u, moved)
    # They are saved with the model.
    assert {"u", "v"} <= set(layer.state_dict())


def test_conv_net_keeps_shape_and_batch() -> None:
    net = LipschitzConvNet(2, 4, input_size=(2, 2), coefficient=0.9)
    assert net(torch.randn(3, 5, 2, 2, 2)).shape == (3, 5, 2, 2, 2)


def test_errors() -> None:
    with pytest.raises(ValueError, match="odd kernel_size, got 2"):
        SpectralNormConv2d(1, 1, 2, input_size=(2, 2))
    with pytest.raises(ValueError, match=r"input_size \(H, W\), got \(2,\)"):
        SpectralNormConv2d(1, 1, 3, input_size=(2,))
    with pytest.raises(ValueError, match="activation in"):
        LipschitzMLP(2, (4,), activation="relu6")
    with pytest.raises(ValueError, match="coefficient"):
        SpectralNormLinear(2, 2, coefficient=0.0)
