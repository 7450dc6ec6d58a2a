"""Bijector base class, Compose (ranks as torch's ComposeTransform, log-det sums) and Inverse."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions.transforms import ComposeTransform
from torch.testing import assert_close

from flowkit.bijectors import (
    Affine,
    Bijector,
    Compose,
    Exp,
    Flatten,
    Inverse,
    InverseNotAvailable,
    LeakyReLU,
    Reshape,
    Sigmoid,
    Softplus,
)
from flowkit.testing import check_bijector

# A composition's codomain is its last part's (as for torch's ComposeTransform), so bounded maps
# such as Exp come last, where that codomain is the true image.
CHAINS = [
    pytest.param(
        lambda: [LeakyReLU(0.5), Affine((3,), event_rank=1)], (3,), id="elementwise-then-vector"
    ),
    pytest.param(lambda: [Reshape((4,), (2, 2)), Exp()], (4,), id="reshape-then-elementwise"),
    pytest.param(
        lambda: [LeakyReLU(0.5), Reshape((4,), (2, 2))], (4,), id="elementwise-then-reshape"
    ),
    pytest.param(lambda: [Flatten((2, 2, 2)), Affine((8,), event_rank=1)], (2, 2, 2), id="flatten"),
    pytest.param(
        lambda: [Affine((8,), event_rank=1), Inverse(Flatten((2, 2, 2))), Exp()],
        (8,),
        id="unflatten",
    ),
    pytest.param(
        lambda: [LeakyReLU(2.0), Reshape((4,), (2, 2)), Affine(), Flatten((2, 2))],
        (4,),
        id="round-trip-shape",
    ),
]


@pytest.mark.parametrize(("make", "event_shape"), CHAINS)
def test_compose_ranks_match_torch_compose_transform(make, event_shape) -> None:
    parts = make()
    transform = ComposeTransform([part.as_transform() for part in parts])
    compose = Compose(*parts)
    assert compose.event_rank == transform.domain.event_dim
    assert compose.latent_rank == transform.codomain.event_dim
    inverse = Inverse(compose)
    assert (inverse.event_rank, inverse.latent_rank) == (compose.latent_rank, compose.event_rank)


@pytest.mark.parametrize(("make", "event_shape"), CHAINS)
def test_compose_log_det_is_the_sum_over_remaining_event_dims(make, event_shape) -> None:
    parts = [part.double() for part in make()]
    compose = Compose(*parts)
    x = torch.randn((2, 3) + event_shape, dtype=torch.float64)
    z, log_abs_det = compose(x)
    assert log_abs_det.shape == (2, 3)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    value = x
    for part in parts:
        value, part_log_abs_det = part(value)
        expected = expected + part_log_abs_det.reshape(2, 3, -1).sum(-1)
    assert_close(z, value)
    assert_close(log_abs_det, expected)
    assert compose.forward_shape(x.shape) == z.shape
    assert compose.inverse_shape(z.shape) == x.shape
    check_bijector(compose, event_shape, batch_shape=(2,))


def test_compose_is_a_sequence() -> None:
    parts = [Affine(), Sigmoid()]
    compose = Compose(parts)
    assert len(compose) == 2 and list(compose) == parts and compose[1] is parts[1]
    assert compose.domain is parts[0].domain and compose.codomain is parts[1].codomain
    assert Compose(*parts).bijectors[0] is parts[0]


def test_empty_compose_is_the_identity() -> None:
    x = torch.randn(4, 3)
    z, log_abs_det = Compose()(x)
    assert torch.equal(z, x) and torch.equal(log_abs_det, torch.zeros(4, 3))


def test_inverse_swaps_directions_and_constraints() -> None:
    sigmoid = Sigmoid()
    inverse = Inverse(sigmoid)
    assert inverse.domain is sigmoid.codomain and inverse.codomain is sigmoid.domain
    u = torch.rand(5, dtype=torch.float64)
    x, log_abs_det = inverse(u)
    assert_close(x, torch.logit(u))
    assert_close(log_abs_det, -sigmoid(x)[1])
    assert_close(inverse.inverse(x)[0], u)
    assert inverse.forward_shape((2, 3)) == (2, 3)
    flatten = Flatten((2, 3))
    assert Inverse(flatten).forward_shape((4, 6)) == (4, 2, 3)
    assert Inverse(flatten).inverse_shape((4, 2, 3)) == (4, 6)
    assert list(Inverse(Softplus()).parameters()) == list(Softplus().parameters())


class _ForwardOnly(Bijector):
    """A bijector with no closed-form inverse (it keeps the base class's ``inverse``)."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + 0.5 * torch.tanh(x), torch.log1p(0.5 * (1 - torch.tanh(x) ** 2))


def test_missing_inverse_is_declared() -> None:
    with pytest.raises(InverseNotAvailable, match="_ForwardOnly"):
        _ForwardOnly().inverse(torch.zeros(2))
    assert issubclass(InverseNotAvailable, NotImplementedError)
    # The harness checks everything else and skips the inverse checks, not the bijector.
    check_bijector(_ForwardOnly(), (3,))
    with pytest.raises(NotImplementedError, match="Bijector does not implement forward"):
        Bijector()(torch.zeros(2))


def test_shape_helpers_check_rank() -> None:
    with pytest.raises(ValueError, match=r"at least 1 dimensions.*got shape \(\)"):
        Affine((3,), event_rank=1).forward_shape(())
    assert Affine((3,), event_rank=1).forward_shape((5, 3)) == (5, 3)
