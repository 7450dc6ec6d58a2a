import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from flowkit.nn import MADE, MaskedLinear, autoregressive_order
from flowkit.testing.strategies import seeds


@st.composite
def made_configs(draw, *, min_width=1):
    features = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["natural", "reversed", "permutation"]))
    if kind == "permutation":
        order = draw(st.permutations(range(features)))
    else:
        order = kind
    residual = draw(st.booleans())
    depth = draw(st.integers(1, 3))
    if residual:
        hidden = (draw(st.integers(min_width, min_width + 8)),) * depth
    else:
        widths = st.integers(min_width, min_width + 8)
        hidden = tuple(draw(st.lists(widths, min_size=depth, max_size=depth)))
    return dict(
        features=features,
        params_per_feature=draw(st.integers(1, 3)),
        hidden_features=hidden,
        context_features=draw(st.sampled_from([None, 1, 3])),
        residual=residual,
        order=order,
    )


def _randomised(config, seed, activation=nn.ReLU):
    made = MADE(**config, activation=activation).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in made.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return made


def _jacobians(made, config, seed):
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(config["features"], generator=generator, dtype=torch.float64)
    context_features = config["context_features"]
    if context_features is None:
        jacobian_x = torch.autograd.functional.jacobian(lambda v: made(v), x)
        return jacobian_x, None
    context = torch.randn(context_features, generator=generator, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda v, c: made(v, c), (x, context))


def _allowed(config):
    positions = autoregressive_order(config["features"], config["order"])
    per_output = positions.repeat_interleave(config["params_per_feature"])
    return per_output[:, None] > positions[None, :]


@given(config=made_configs(), seed=seeds())
def test_outputs_never_depend_on_later_features(config, seed):
    made = _randomised(config, seed)
    jacobian_x, _ = _jacobians(made, config, seed)
    features, params = config["features"], config["params_per_feature"]
    assert jacobian_x.shape == (features * params, features)
    forbidden = ~_allowed(config)
    assert torch.all(jacobian_x[forbidden] == 0.0), jacobian_x


@given(config=made_configs(min_width=6), seed=seeds())
def test_every_allowed_dependency_exists_when_layers_are_wide_enough(config, seed):
    # tanh never saturates to an exact zero derivative, so a present connection shows up as a
    # nonzero Jacobian entry; the masks' product says the same structurally.
    made = _randomised(config, seed, activation=nn.Tanh)
    jacobian_x, jacobian_context = _jacobians(made, config, seed)
    allowed = _allowed(config)
    assert torch.all(jacobian_x[allowed] != 0.0)
    connectivity = made.hidden_layers[0].mask
    for layer in list(made.hidden_layers[1:]) + [b.first for b in made.blocks]:
        connectivity = layer.mask @ connectivity
    connectivity = made.output_layer.mask @ connectivity
    assert torch.equal(connectivity > 0, allowed)
    if jacobian_context is not None:
        # Every output, the first feature's included, sees the context.
        assert torch.all(jacobian_context.abs().sum(-1) > 0)


@pytest.mark.parametrize("order", ["natural", "reversed", [2, 0, 3, 1]])
def test_output_layout_is_interleaved_per_feature(order):
    params = 3
    made = _randomised(
        dict(
            features=4,
            params_per_feature=params,
            hidden_features=(12,),
            context_features=None,
            residual=False,
            order=order,
        ),
        0,
    )
    positions = autoregressive_order(4, order)
    first = int(torch.argmin(positions))
    x = torch.randn(5, 4, dtype=torch.float64)
    moved = x + torch.randn(5, 4, dtype=torch.float64)
    # The first feature in the order has constant parameters: outputs first*P ... first*P + P - 1.
    theta, theta_moved = made(x), made(moved)
    block = slice(first * params, (first + 1) * params)
    assert torch.equal(theta[:, block], theta_moved[:, block])
    assert not torch.allclose(theta, theta_moved)
    assert torch.equal(theta[:, first * params], theta[:, 0::params][:, first])


def test_output_starts_at_zero_and_only_masked_weights_learn():
    made = MADE(3, 2, (8, 8), context_features=2)
    x, context = torch.randn(4, 3), torch.randn(4, 2)
    assert torch.equal(made(x, context), torch.zeros(4, 6))
    layer = MaskedLinear(3, 2, torch.tensor([[1, 0, 0], [1, 1, 0]]))
    layer(torch.randn(5, 3)).square().sum().backward()
    assert torch.equal(layer.weight.grad == 0, layer.mask == 0)


def test_context_broadcasts_over_the_batch():
    made = _randomised(
        dict(
            features=3,
            params_per_feature=1,
            hidden_features=(8,),
            context_features=2,
            residual=False,
            order="natural",
        ),
        0,
    )
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    context = torch.randn(5, 2, dtype=torch.float64)
    expected = made(x, context.expand(4, 5, 2))
    assert torch.equal(made(x, context), expected)


def test_parameter_count():
    features, params, hidden, context = 5, 3, (16, 12), 4
    made = MADE(features, params, hidden, context_features=context)
    expected = (features * 16 + 16) + (16 * 12 + 12) + context * (16 + 12) + (12 * 15 + 15)
    assert sum(p.numel() for p in made.parameters()) == expected
    residual = MADE(features, params, (16, 16), context_features=context, residual=True)
    block = 2 * (16 * 16 + 16) + context * 16
    expected = (features * 16 + 16) + context * 16 + 2 * block + (16 * 15 + 15)
    assert sum(p.numel() for p in residual.parameters()) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(features=3, hidden_features=(8, 4), residual=True), "equal hidden widths"),
        (dict(features=3, order=[0, 0, 1]), "permutation of range"),
        (dict(features=3, order="random"), "'natural', 'reversed'"),
        (dict(features=0), "features >= 1"),
        (dict(features=3, hidden_features=()), "at least one hidden layer"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MADE(**kwargs)


def test_bad_inputs_are_named():
    made = MADE(3, 2, (8,), context_features=2)
    with pytest.raises(ValueError, match="context with 2 features, got None"):
        made(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"event shape \(3\)"):
        made(torch.randn(4, 5), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"event shape \(2\)"):
        made(torch.randn(4, 3), torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\)"):
        MaskedLinear(3, 2, torch.ones(3, 2))
