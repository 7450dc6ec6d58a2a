"""flowkit bijectors as torch.distributions transforms and back."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.distributions import (
    Independent,
    Normal,
    TransformedDistribution,
    constraints,
    transform_to,
)
from torch.distributions import transforms as T
from torch.testing import assert_close

from flowkit import Flow, from_transform
from flowkit.bijectors import (
    ActNorm,
    Affine,
    Compose,
    Exp,
    Inverse,
    LeakyReLU,
    Logit,
    Sigmoid,
    Softplus,
    Tanh,
    TransformBijector,
)
from flowkit.distributions import StandardNormal
from flowkit.testing import check_bijector
from tests.registry import REGISTRY, Case, example, realnvp_vector

ids = {"ids": lambda case: case.id}


@pytest.mark.parametrize("case", REGISTRY, **ids)
def test_as_transform_follows_torch_contract(case: Case) -> None:
    bijector, x, context = example(case)
    transform = bijector.as_transform(context)
    assert isinstance(transform, T.Transform) and transform.bijective
    assert transform.inv.inv is transform
    assert transform.domain.event_dim == bijector.event_rank
    assert transform.codomain.event_dim == bijector.latent_rank
    assert transform.inv.domain.event_dim == bijector.latent_rank
    with torch.no_grad():
        z, log_abs_det = bijector(x, context)
        y = transform(x)
        assert_close(y, z)
        assert transform(x) is y, "cache_size=1 must return the cached output"
        assert transform.inv(y) is x, "cache_size=1 must return the cached input"
        assert_close(transform.log_abs_det_jacobian(x, y), log_abs_det)
        assert_close(transform.inv.log_abs_det_jacobian(y, x), -log_abs_det)
        assert bool(transform.domain.check(x).all())
        assert bool(transform.codomain.check(y).all())

        uncached = bijector.as_transform(context, cache_size=0)
        y_fresh = uncached(x)
        assert_close(uncached.inv(y_fresh), x)
        assert_close(uncached.log_abs_det_jacobian(x, y_fresh), log_abs_det)
    assert tuple(transform.forward_shape(x.shape)) == tuple(z.shape)
    assert tuple(transform.inverse_shape(z.shape)) == tuple(x.shape)


@pytest.mark.parametrize("case", REGISTRY, **ids)
def test_transformed_distribution_equals_flow(case: Case) -> None:
    bijector, x, context = example(case)
    event_shape = x.shape[1:]
    latent_shape = bijector.forward_shape(x.shape)[1:]
    context_shape = () if case.num_classes is not None else case.context_shape
    flow = Flow(StandardNormal(latent_shape), bijector, context_shape=context_shape).double()
    zeros = torch.zeros(latent_shape, dtype=torch.float64)
    base = Independent(Normal(zeros, torch.ones_like(zeros)), len(latent_shape))
    distribution = TransformedDistribution(base, bijector.as_transform(context).inv)
    assert distribution.event_shape == event_shape
    with torch.no_grad():
        assert_close(distribution.log_prob(x), flow.log_prob(x, context))


ELEMENTWISE = [
    pytest.param(lambda: Affine(scale=0.5), 1, id="affine"),
    pytest.param(Exp, 1, id="exp"),
    pytest.param(Sigmoid, 1, id="sigmoid"),
    pytest.param(Logit, 1, id="logit"),
    pytest.param(Tanh, 1, id="tanh"),
    pytest.param(Softplus, 1, id="softplus"),
    pytest.param(lambda: LeakyReLU(0.1), 1, id="leaky-relu"),
    pytest.param(lambda: Inverse(Sigmoid()), 1, id="inverse-sigmoid"),
    pytest.param(lambda: from_transform(T.AffineTransform(1.0, -2.0)), -1, id="transform-flip"),
]


@pytest.mark.parametrize(("make", "expected"), ELEMENTWISE)
def test_elementwise_sign_matches_derivative(make, expected: int) -> None:
    bijector = make()
    transform = bijector.as_transform()
    x = transform_to(bijector.domain)(torch.randn(20, dtype=torch.float64)).requires_grad_(True)
    z, _ = bijector(x)
    (derivative,) = torch.autograd.grad(z.sum(), x)
    assert bool((torch.sign(derivative) == expected).all())
    assert transform.sign == expected
    assert transform.inv.sign == expected


@pytest.mark.parametrize(
    "bijector",
    [ActNorm(2, event_rank=1), Sigmoid(event_rank=1), Compose(Exp()), Inverse(ActNorm(2))],
    ids=["actnorm", "sigmoid-rank-1", "compose", "inverse-actnorm"],
)
def test_sign_is_undefined_for_non_scalar_maps(bijector) -> None:
    with pytest.raises(NotImplementedError, match="sign"):
        _ = bijector.as_transform().sign


def test_torch_compose_of_transforms_equals_compose() -> None:
    parts = [Exp(), Affine((3,), scale=2.0, event_rank=1), Softplus()]
    transform = T.ComposeTransform([part.as_transform() for part in parts])
    x = torch.randn(4, 3, dtype=torch.float64)
    z, log_abs_det = Compose(*parts).double()(x)
    y = transform(x)
    assert_close(y, z)
    assert transform.domain.event_dim == Compose(*parts).event_rank == 1
    assert_close(transform.log_abs_det_jacobian(x, y), log_abs_det)


def _positive_exponent_transform() -> T.Transform:
    return T.ComposeTransform([T.ExpTransform(), T.PowerTransform(torch.tensor(0.5))])


# A ComposeTransform's codomain is its last part's, so each composite below ends with a part whose
# codomain is the composite's true image (torch cannot know that an earlier part bounds it).
TORCH_TRANSFORMS = [
    pytest.param(T.ExpTransform, (3,), id="exp"),
    pytest.param(lambda: T.AffineTransform(0.3, -1.7), (3,), id="affine"),
    pytest.param(T.SigmoidTransform, (3,), id="sigmoid"),
    pytest.param(T.TanhTransform, (3,), id="tanh"),
    pytest.param(T.SoftplusTransform, (3,), id="softplus"),
    pytest.param(_positive_exponent_transform, (3,), id="exp-power"),
    pytest.param(
        lambda: T.ComposeTransform([T.AffineTransform(0.5, 2.0), T.SigmoidTransform()]).inv,
        (3,),
        id="compose-inverse",
    ),
    pytest.param(lambda: T.ReshapeTransform((4,), (2, 2)), (4,), id="reshape"),
    pytest.param(lambda: T.IndependentTransform(T.SoftplusTransform(), 1), (3,), id="independent"),
    pytest.param(
        lambda: T.ComposeTransform(
            [T.ReshapeTransform((4,), (2, 2)), T.IndependentTransform(T.ExpTransform(), 2)]
        ),
        (4,),
        id="compose-event-dim-1",
    ),
]


@pytest.mark.parametrize(("make", "event_shape"), TORCH_TRANSFORMS)
def test_from_transform_wraps_torch_transforms(make, event_shape) -> None:
    transform = make()
    bijector = from_transform(transform)
    assert isinstance(bijector, TransformBijector)
    assert bijector.event_rank == transform.domain.event_dim
    assert bijector.latent_rank == transform.codomain.event_dim
    x = transform_to(transform.domain)(torch.randn((5,) + event_shape, dtype=torch.float64))
    y = transform(x)
    z, log_abs_det = bijector(x)
    assert_close(z, y)
    assert_close(log_abs_det, transform.log_abs_det_jacobian(x, y).expand(log_abs_det.shape))
    assert log_abs_det.shape == x.shape[: x.dim() - bijector.event_rank]
    check_bijector(bijector, event_shape, batch_shape=(2, 3))


def test_from_transform_gives_the_transform_back() -> None:
    transform = T.AffineTransform(0.3, 2.0, cache_size=1)
    bijector = from_transform(transform)
    assert bijector.as_transform() is transform
    assert bijector.as_transform(cache_size=0)._cache_size == 0


@pytest.mark.parametrize("case", REGISTRY, **ids)
def test_from_transform_of_as_transform_is_the_bijector(case: Case) -> None:
    bijector, x, context = example(case)
    if isinstance(bijector, TransformBijector):
        # Its transform is the wrapped torch transform; the round trip runs the other way.
        transform = bijector.as_transform()
        assert from_transform(transform).as_transform() is transform
        return
    assert from_transform(bijector.as_transform()) is bijector
    if context is not None:
        # A context is baked into the transform, so the wrapper is new but computes the same map.
        wrapped = from_transform(bijector.as_transform(context))
        assert wrapped is not bijector
        with torch.no_grad():
            for got, expected in zip(wrapped(x), bijector(x, context)):
                assert_close(got, expected)


@pytest.mark.parametrize(
    "transform",
    [
        T.ExpTransform().inv,
        T.IndependentTransform(T.SigmoidTransform().inv, 1),
        T.ComposeTransform([T.ExpTransform().inv, T.AffineTransform(1.0, 2.0)], cache_size=1),
    ],
    ids=["inverse", "independent-inverse", "compose-of-inverse"],
)
def test_wrapped_inverse_transforms_survive_copies(transform: T.Transform) -> None:
    # torch drops an inverse transform's link to its base when it is pickled or deep-copied.
    bijector = from_transform(transform)
    x = torch.rand(4, 3, dtype=torch.float64) * 0.8 + 0.1
    expected = bijector(x)
    for copied in (copy.deepcopy(bijector), pickle.loads(pickle.dumps(bijector))):
        for got, want in zip(copied(x), expected):
            assert_close(got, want)
        assert_close(copied.inverse(expected[0])[0], x)
    assert bijector.transform is transform


def test_from_transform_rejects_non_bijective_and_non_transforms() -> None:
    with pytest.raises(ValueError, match="bijective.*AbsTransform"):
        from_transform(T.AbsTransform())
    with pytest.raises(TypeError, match="Transform, got Linear"):
        from_transform(torch.nn.Linear(2, 2))


def test_transformed_distribution_samples_with_gradients() -> None:
    bijector = realnvp_vector((4,))
    with torch.no_grad():
        for parameter in bijector.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    base = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    distribution = TransformedDistribution(base, bijector.as_transform().inv)
    samples = distribution.rsample((64,))
    assert samples.shape == (64, 4)
    log_prob = distribution.log_prob(samples)
    assert bool(torch.isfinite(log_prob).all())
    samples.sum().backward()
    gradients = [p.grad for p in bijector.parameters()]
    assert all(g is not None for g in gradients)
    assert any(float(g.abs().max()) > 0 for g in gradients)
    assert isinstance(distribution.support, constraints.Constraint)
