"""Tests of the toy densities: determinism, geometry, and the known mixtures against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from flowkit.data.toy import (
    KnownMixture,
    checkerboard,
    eight_gaussians,
    eight_gaussians_mixture,
    gaussian_mixture_10d,
    mixture_10d,
    two_moons,
)

GENERATORS = {
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "gaussian_mixture_10d": gaussian_mixture_10d,
}


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_given_a_generator(name):
    make = GENERATORS[name]
    first, second = make(500, generator=_seeded(7)), make(500, generator=_seeded(7))
    assert first.dtype == torch.float32
    assert torch.equal(first, second)
    assert not torch.equal(first, make(500, generator=_seeded(8)))
    assert make(0, generator=_seeded(7)).shape == (0, first.shape[1])
    assert make(4, generator=_seeded(7), dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_invalid_counts_raise(name, n):
    with pytest.raises(ValueError, match="non-negative integer"):
        GENERATORS[name](n)


def test_two_moons_without_noise_lie_on_the_two_half_circles():
    points = two_moons(2000, noise=0.0, generator=_seeded(0), dtype=torch.float64).numpy()
    raw = points + np.array([0.5, 0.25])
    on_upper = np.isclose(np.hypot(raw[:, 0], raw[:, 1]), 1.0) & (raw[:, 1] >= -1e-12)
    lower = raw - np.array([1.0, 0.5])
    on_lower = np.isclose(np.hypot(lower[:, 0], lower[:, 1]), 1.0) & (lower[:, 1] <= 1e-12)
    assert (on_upper | on_lower).all()
    assert 0.45 < on_upper.mean() < 0.55
    # Angles along each moon are uniform on [0, pi].
    angles = np.arctan2(raw[on_upper, 1], raw[on_upper, 0])
    assert stats.kstest(angles, stats.uniform(0, math.pi).cdf).pvalue > 1e-3


def test_two_moons_noise_has_the_requested_scale():
    clean = two_moons(4000, noise=0.0, generator=_seeded(3), dtype=torch.float64)
    noisy = two_moons(4000, noise=0.2, generator=_seeded(3), dtype=torch.float64)
    difference = (noisy - clean).numpy().ravel()
    assert stats.kstest(difference, stats.norm(0, 0.2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("squares", [4, 3])
def test_checkerboard_is_uniform_on_the_dark_cells(squares):
    half_width = 3.0
    points = checkerboard(
        40_000, squares=squares, half_width=half_width, generator=_seeded(1), dtype=torch.float64
    ).numpy()
    side = 2 * half_width / squares
    cell = np.floor((points + half_width) / side).astype(int)
    assert ((cell >= 0) & (cell < squares)).all()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    dark = [(i, j) for i in range(squares) for j in range(squares) if (i + j) % 2 == 0]
    counts = [np.sum((cell[:, 0] == i) & (cell[:, 1] == j)) for i, j in dark]
    assert stats.chisquare(counts).pvalue > 1e-3
    within = (points + half_width) / side - cell
    for axis in range(2):
        assert stats.kstest(within[:, axis], "uniform").pvalue > 1e-3


def _mixture_10d_by_hand():
    """The documented definition of mixture_10d, written out independently."""
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    means = np.array(
        [
            [2.5 * math.cos(math.pi * (k + 1) * (2 * d + 1) / 20) for d in range(10)]
            for k in range(4)
        ]
    )
    covariances = []
    for s, rho in zip([0.5, 0.7, 1.0, 1.3], [0.5, -0.5, 0.8, 0.0]):
        factor = s * (np.eye(10) + rho * np.eye(10, k=-1))
        covariances.append(factor @ factor.T)
    return weights, means, covariances


def test_mixture_10d_log_prob_matches_brute_force():
    weights, means, covariances = _mixture_10d_by_hand()
    x = gaussian_mixture_10d(300, generator=_seeded(2), dtype=torch.float64)
    x = torch.cat([x, torch.randn(50, 10, dtype=torch.float64) * 4])
    per_component = np.stack(
        [stats.multivariate_normal(means[k], covariances[k]).logpdf(x.numpy()) for k in range(4)],
        axis=-1,
    )
    expected = special.logsumexp(per_component + np.log(weights), axis=-1)
    np.testing.assert_allclose(mixture_10d().log_prob(x).numpy(), expected, rtol=1e-10)
    assert mixture_10d().log_prob(x.float()).dtype == torch.float32


def test_mixture_10d_marginals_pass_a_ks_test():
    weights, means, covariances = _mixture_10d_by_hand()
    samples = gaussian_mixture_10d(20_000, generator=_seeded(4), dtype=torch.float64).numpy()
    for d in range(10):
        scales = np.array([math.sqrt(c[d, d]) for c in covariances])

        def cdf(value, d=d, scales=scales):
            value = np.asarray(value)[..., None]
            return (weights * stats.norm.cdf((value - means[:, d]) / scales)).sum(-1)

        assert stats.kstest(samples[:, d], cdf).pvalue > 1e-3, f"marginal {d}"


def test_eight_gaussians_density_integrates_to_one_and_matches_scipy():
    mixture = eight_gaussians_mixture(radius=2.0, std=0.3)
    grid = np.linspace(-4.5, 4.5, 501)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    points = torch.from_numpy(np.stack([xx, yy], axis=-1))
    density = mixture.log_prob(points).exp().numpy()
    total = integrate.simpson(integrate.simpson(density, x=grid, axis=1), x=grid)
    assert total == pytest.approx(1.0, abs=1e-6)
    centres = [(2 * math.cos(k * math.pi / 4), 2 * math.sin(k * math.pi / 4)) for k in range(8)]
    probe = np.array([[0.3, -1.2], [2.0, 0.1]])
    expected = np.log(
        np.mean(
            [stats.multivariate_normal(c, 0.09 * np.eye(2)).pdf(probe) for c in centres], axis=0
        )
    )
    np.testing.assert_allclose(mixture.log_prob(torch.from_numpy(probe)).numpy(), expected)


def test_eight_gaussians_samples_cluster_at_the_centres():
    samples = eight_gaussians(8000, std=0.1, generator=_seeded(5), dtype=torch.float64).numpy()
    radius = np.hypot(samples[:, 0], samples[:, 1])
    assert abs(radius.mean() - 2.0) < 0.01
    sector = np.round(np.arctan2(samples[:, 1], samples[:, 0]) / (math.pi / 4)).astype(int) % 8
    assert stats.chisquare(np.bincount(sector, minlength=8)).pvalue > 1e-3


def test_known_mixture_validates_its_parameters():
    with pytest.raises(ValueError, match=r"scale_trils of shape \(2, 1, 1\)"):
        KnownMixture(torch.ones(2), torch.zeros(2, 1), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="positive diagonal"):
        KnownMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="positive weights"):
        KnownMixture(torch.tensor([1.0, 0.0]), torch.zeros(2, 1), torch.ones(2, 1, 1))
    with pytest.raises(ValueError, match="10 features"):
        mixture_10d().log_prob(torch.zeros(3, 9))
