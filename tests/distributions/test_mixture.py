"""Tests of MixtureOfGaussians against scipy: density, normalisation, sample moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from scipy import integrate, special, stats

from flowkit.bijectors import LULinear
from flowkit.distributions import Flow, MixtureOfGaussians
from flowkit.testing.strategies import seeds, st


def _mixture(event_shape, components, seed, spread=1.0):
    base = MixtureOfGaussians(event_shape, components, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        base.logits.copy_(torch.randn(components, generator=generator, dtype=torch.float64))
        base.means.mul_(spread)
        base.log_scales.uniform_(-0.7, 0.5, generator=generator)
    return base


def _scipy_log_prob(base, z):
    weights = special.softmax(base.logits.detach().numpy())
    means = base.means.detach().numpy().reshape(base.components, -1)
    scales = np.exp(base.log_scales.detach().numpy()).reshape(base.components, -1)
    flat = z.reshape(-1, means.shape[1])
    per_component = np.stack(
        [
            stats.multivariate_normal(means[k], np.diag(scales[k] ** 2)).logpdf(flat).reshape(-1)
            for k in range(base.components)
        ],
        axis=-1,
    )
    return special.logsumexp(per_component + np.log(weights), axis=-1)


@given(components=st.integers(1, 4), dims=st.integers(1, 3), seed=seeds())
def test_log_prob_matches_scipy(components, dims, seed):
    base = _mixture((dims,), components, seed)
    z = torch.randn(7, dims, dtype=torch.float64) * 2
    expected = _scipy_log_prob(base, z.numpy())
    np.testing.assert_allclose(base.log_prob(z).detach().numpy(), expected, rtol=1e-10)


def test_log_prob_of_a_matrix_event_and_batch_shapes():
    base = _mixture((2, 3), 3, seed=1)
    z = torch.randn(4, 5, 2, 3, dtype=torch.float64)
    log_prob = base.log_prob(z)
    assert log_prob.shape == (4, 5)
    expected = _scipy_log_prob(base, z.reshape(-1, 6).numpy()).reshape(4, 5)
    np.testing.assert_allclose(log_prob.detach().numpy(), expected, rtol=1e-10)


def test_density_integrates_to_one():
    base = _mixture((2,), 3, seed=2)
    grid = np.linspace(-9.0, 9.0, 601)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    points = torch.from_numpy(np.stack([xx, yy], axis=-1))
    with torch.no_grad():
        density = base.log_prob(points).exp().numpy()
    total = integrate.simpson(integrate.simpson(density, x=grid, axis=1), x=grid)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_moments(temperature):
    torch.manual_seed(3)
    base = _mixture((2,), 3, seed=3, spread=2.0)
    with torch.no_grad():
        samples = base.sample(200_000, temperature=temperature).numpy()
    weights = special.softmax(base.logits.detach().numpy())
    means = base.means.detach().numpy()
    variances = (np.exp(base.log_scales.detach().numpy()) * temperature) ** 2
    mean = weights @ means
    second = np.einsum("k,ki,kj->ij", weights, means, means) + np.diag(weights @ variances)
    covariance = second - np.outer(mean, mean)
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.05)


def test_sample_is_reparameterised_in_means_and_scales_only():
    base = MixtureOfGaussians((2,), 3, seed=0)
    base.sample(16).square().sum().backward()
    assert base.means.grad.abs().sum() > 0 and base.log_scales.grad.abs().sum() > 0
    assert base.logits.grad is None


def test_sample_shapes_and_dtype():
    base = MixtureOfGaussians((2, 3), 2, seed=0).double()
    assert base.sample().shape == (2, 3)
    assert base.sample((4, 5)).shape == (4, 5, 2, 3)
    assert base.sample(0).shape == (0, 2, 3)
    assert base.sample(3).dtype == torch.float64


def test_fixed_mixture_has_no_parameters():
    base = MixtureOfGaussians((2,), 3, learnable=False, seed=0)
    assert list(base.parameters()) == []
    assert set(dict(base.named_buffers())) == {"logits", "means", "log_scales"}


@pytest.mark.parametrize("kwargs", [{"components": 0}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="components as an int >= 1, got 0"):
        MixtureOfGaussians((2,), **kwargs)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature > 0"):
        MixtureOfGaussians((2,), 2).sample(3, temperature=0.0)


def test_wrong_event_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2\).*\(3\)"):
        MixtureOfGaussians((2,), 2).log_prob(torch.zeros(4, 3))


def test_as_the_base_of_a_flow():
    flow = Flow(MixtureOfGaussians((3,), 4, seed=0), LULinear(3, seed=0))
    x = flow.sample(6)
    assert x.shape == (6, 3)
    log_prob = flow.log_prob(x)
    z, log_abs_det = flow.bijector(x)
    torch.testing.assert_close(log_prob, flow.base.log_prob(z) + log_abs_det)
