"""Tests of LULinear, HouseholderLinear, QRLinear and SVDLinear."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from flowkit.bijectors import (
    HouseholderLinear,
    LULinear,
    QRLinear,
    SVDLinear,
    householder_product,
)
from flowkit.testing import check_bijector
from flowkit.testing.strategies import batch_shapes, seeds, st
from tests.registry_linear import ENTRIES

F64 = torch.float64


def _reflection(v: torch.Tensor) -> torch.Tensor:
    return torch.eye(v.numel(), dtype=v.dtype) - 2 * torch.outer(v, v) / v.dot(v)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=F64)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_registry_entries_pass_the_contract(entry):
    _, make, event_shape, context_shape = entry
    check_bijector(make(), event_shape, context_shape)
    check_bijector(make(), event_shape, context_shape, dtype=torch.float32)


@given(
    features=st.integers(1, 6),
    identity=st.booleans(),
    bias=st.booleans(),
    batch=batch_shapes(),
    seed=seeds(),
)
def test_lu_linear_contract(features, identity, bias, batch, seed):
    linear = LULinear(features, identity_init=identity, bias=bias, seed=seed)
    check_bijector(linear, (features,), batch_shape=batch, seed=seed, perturb=0.3)


@given(features=st.integers(1, 6), data=st.data(), batch=batch_shapes(), seed=seeds())
def test_householder_linear_contract(features, data, batch, seed):
    reflections = data.draw(st.integers(1, features + 2))
    linear = HouseholderLinear(features, reflections, seed=seed)
    check_bijector(linear, (features,), batch_shape=batch, seed=seed, perturb=0.5)


@given(features=st.integers(1, 6), data=st.data(), batch=batch_shapes(), seed=seeds())
def test_qr_linear_contract(features, data, batch, seed):
    reflections = data.draw(st.integers(1, features))
    linear = QRLinear(features, reflections, bias=data.draw(st.booleans()), seed=seed)
    check_bijector(linear, (features,), batch_shape=batch, seed=seed, perturb=0.3)


@given(features=st.integers(1, 6), data=st.data(), batch=batch_shapes(), seed=seeds())
def test_svd_linear_contract(features, data, batch, seed):
    reflections = data.draw(st.integers(1, features))
    linear = SVDLinear(features, reflections, bias=data.draw(st.booleans()), seed=seed)
    check_bijector(linear, (features,), batch_shape=batch, seed=seed, perturb=0.3)


@given(count=st.integers(1, 7), features=st.integers(1, 6), seed=seeds())
def test_householder_product_is_the_product_of_reflections(count, features, seed):
    vectors = torch.randn(count, features, dtype=F64, generator=torch.Generator().manual_seed(seed))
    expected = _eye(features)
    for v in vectors:
        expected = expected @ _reflection(v)
    q = householder_product(vectors)
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(q.T @ q, _eye(features))
    assert torch.linalg.det(q).item() == pytest.approx((-1.0) ** count)


def test_householder_product_treats_a_zero_vector_as_identity():
    vectors = torch.zeros(2, 3, dtype=F64)
    vectors[1] = torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    torch.testing.assert_close(householder_product(vectors), _reflection(vectors[1]))


@given(features=st.integers(1, 6), seed=seeds())
def test_householder_linear_is_orthogonal_and_volume_preserving(features, seed):
    linear = HouseholderLinear(features, seed=seed).double()
    with torch.no_grad():
        linear.vectors.add_(torch.randn_like(linear.vectors))
    x = torch.randn(4, features, dtype=F64)
    z, log_abs_det = linear(x)
    weight = torch.autograd.functional.jacobian(lambda v: linear(v)[0], x[0])
    torch.testing.assert_close(weight.T @ weight, _eye(features))
    assert torch.equal(log_abs_det, torch.zeros(4, dtype=F64))
    torch.testing.assert_close(z.norm(dim=-1), x.norm(dim=-1))


@given(features=st.integers(1, 6), seed=seeds())
def test_qr_linear_factors_into_orthogonal_times_positive_upper(features, seed):
    linear = QRLinear(features, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in linear.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=F64) * 0.5)
    weight, log_det = linear.weight_and_log_det()
    # The QR factorisation with positive diagonal is unique: recover R from the Cholesky factor of
    # W^T W = R^T R, then Q = W R^-1 must be orthogonal and diag(R) = exp(log_diagonal).
    upper = torch.linalg.cholesky(weight.T @ weight).T
    q = torch.linalg.solve_triangular(upper, weight, upper=True, left=False)
    torch.testing.assert_close(q.T @ q, _eye(features))
    torch.testing.assert_close(torch.diagonal(upper), linear.log_diagonal.exp())
    torch.testing.assert_close(log_det, torch.linalg.slogdet(weight)[1])


@given(features=st.integers(1, 6), seed=seeds())
def test_svd_linear_singular_values_and_orthogonal_factors(features, seed):
    linear = SVDLinear(features, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in linear.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=F64) * 0.5)
    weight, log_det = linear.weight_and_log_det()
    expected = torch.sort(linear.log_singular_values.exp(), descending=True).values
    torch.testing.assert_close(torch.linalg.svdvals(weight), expected)
    for vectors in (linear.left_vectors, linear.right_vectors):
        q = householder_product(vectors)
        torch.testing.assert_close(q.T @ q, _eye(features))
    torch.testing.assert_close(log_det, linear.log_singular_values.sum())


@pytest.mark.parametrize("cls", [LULinear, QRLinear, SVDLinear])
def test_starts_as_a_rotation_and_the_same_seed_gives_the_same_map(cls):
    first, second = cls(5, seed=3).double(), cls(5, seed=3).double()
    weight = first.weight_and_log_det()[0]
    torch.testing.assert_close(weight.T @ weight, _eye(5))
    torch.testing.assert_close(weight, second.weight_and_log_det()[0])
    assert not torch.allclose(weight, cls(5, seed=4).double().weight_and_log_det()[0])


def test_lu_identity_init_is_the_identity():
    linear = LULinear(4, identity_init=True)
    x = torch.randn(3, 4)
    z, log_abs_det = linear(x)
    torch.testing.assert_close(z, x)
    assert torch.equal(log_abs_det, torch.zeros(3))


def test_lu_log_det_is_the_sum_of_log_diagonal():
    linear = LULinear(4, seed=0).double()
    with torch.no_grad():
        linear.log_diagonal.copy_(torch.tensor([0.1, -0.2, 0.3, 0.5], dtype=F64))
    weight, log_det = linear.weight_and_log_det()
    assert log_det.item() == pytest.approx(0.7)
    assert torch.linalg.slogdet(weight)[1].item() == pytest.approx(0.7)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LULinear(3),
        lambda: HouseholderLinear(3),
        lambda: QRLinear(3),
        lambda: SVDLinear(3),
    ],
)
def test_wrong_feature_count_names_both_sizes(make):
    linear = make()
    with pytest.raises(ValueError, match=r"event shape \(3\).*\(4\)"):
        linear(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"event shape \(3\).*\(4\)"):
        linear.inverse(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(3\)"):
        linear.forward_shape((2, 4))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LULinear(0),
        lambda: HouseholderLinear(3, 0),
        lambda: QRLinear(3, 0),
        lambda: SVDLinear(-1),
    ],
)
def test_invalid_sizes_raise(make):
    with pytest.raises(ValueError, match="expects"):
        make()


def test_unbatched_vector_gives_scalar_log_det():
    linear = QRLinear(3, seed=0)
    z, log_abs_det = linear(torch.randn(3))
    assert z.shape == (3,) and log_abs_det.shape == ()
