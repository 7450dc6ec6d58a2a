"""Benchmark targets: log Z against numerical integration, samplers against the densities."""

from __future__ import annotations

import math

import normflows
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from flowkit.variational.targets import (
    DoubleWell,
    Funnel,
    Gaussian,
    GaussianMixture,
    ManyWell,
    RingMixture,
    Target,
    TwoMoons,
    double_well_log_z,
    gmm40,
)
from tests.helpers import grid_mass, raises_with


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _first_coordinate(x: float) -> float:
    return math.exp(-(x**4) + 6 * x**2 + 0.5 * x)


# --- log Z ----------------------------------------------------------------------------------------
def test_double_well_log_z_matches_adaptive_quadrature() -> None:
    first, _ = integrate.quad(_first_coordinate, -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=200)
    expected = math.log(first) + 0.5 * math.log(2 * math.pi)
    assert double_well_log_z() == pytest.approx(expected, rel=1e-13)
    assert DoubleWell().log_z == pytest.approx(expected, rel=1e-13)
    assert DoubleWell(1).log_z == pytest.approx(math.log(first), rel=1e-13)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    expected_density = torch.tensor(
        [math.log(_first_coordinate(float(v))) for v in x], dtype=torch.float64
    )
    torch.testing.assert_close(DoubleWell(1)(x[:, None]), expected_density)


def test_many_well_is_independent_pairs_of_double_wells() -> None:
    target, pair = ManyWell(32), DoubleWell()
    x = 2 * torch.randn(64, 32, dtype=torch.float64)
    torch.testing.assert_close(target(x), sum(pair(x[:, 2 * k : 2 * k + 2]) for k in range(16)))
    assert target.log_z == pytest.approx(16 * double_well_log_z(), rel=1e-15)


@pytest.mark.parametrize(
    ("target", "bound"),
    [
        (TwoMoons(), 4.0),
        (RingMixture(1), 4.0),
        (RingMixture(2), 4.0),
        (RingMixture(3), 4.0),
        (DoubleWell(), 7.0),
        (Gaussian([0.5, -1.0], [0.7, 1.3]), 9.0),
    ],
    ids=["two_moons", "one_ring", "two_rings", "three_rings", "double_well", "gaussian"],
)
def test_2d_log_z_matches_a_fine_grid(target: Target, bound: float) -> None:
    mass = grid_mass(target, bound, 1201)
    assert target.log_z == pytest.approx(math.log(mass), abs=1e-6)


def test_gmm40_log_z_matches_a_fine_grid() -> None:
    # The means lie in [-40, 40]^2 and the scales are 1.31: [-50, 50]^2 holds all the mass, and
    # the trapezoidal rule is exact to double precision for Gaussians with 5 nodes per scale.
    assert grid_mass(gmm40(), 50.0, 401) == pytest.approx(math.exp(gmm40().log_z), abs=1e-6)


def test_funnel_log_z_matches_nested_quadrature() -> None:
    target = Funnel(2, scale=3.0)

    def density(x: float, v: float) -> float:
        return float(target(torch.tensor([[v, x]], dtype=torch.float64)).exp())

    # The inner coordinate's scale is e^{v/2}: integrate it over 12 of its standard deviations.
    mass, _ = integrate.dblquad(
        density, -25, 25, lambda v: -12 * math.exp(v / 2), lambda v: 12 * math.exp(v / 2)
    )
    assert math.log(mass) == pytest.approx(target.log_z, abs=1e-6)


# --- the densities as published -------------------------------------------------------------------
def test_two_moons_and_rings_equal_normflows() -> None:
    x = 3 * torch.randn(256, 2, dtype=torch.float64)
    torch.testing.assert_close(TwoMoons()(x), normflows.distributions.TwoMoons().log_prob(x))
    for rings in (1, 2, 3):
        reference = normflows.distributions.RingMixture(rings).log_prob(x)
        torch.testing.assert_close(RingMixture(rings)(x), reference)


def test_two_moons_is_the_two_gaussian_ring_of_its_docstring() -> None:
    x = 3 * torch.randn(256, 2, dtype=torch.float64)
    radius = torch.linalg.vector_norm(x, dim=-1)
    moons = torch.logsumexp(
        torch.stack([-0.5 * ((x[:, 0] - 2) / 0.3) ** 2, -0.5 * ((x[:, 0] + 2) / 0.3) ** 2]), 0
    )
    torch.testing.assert_close(TwoMoons()(x), -0.5 * ((radius - 2) / 0.2) ** 2 + moons)


def test_gmm40_is_the_fab_mixture() -> None:
    torch.manual_seed(0)
    means = (torch.rand((40, 2)) - 0.5) * 2 * 40
    target = gmm40()
    torch.testing.assert_close(target.means, means.double())
    torch.testing.assert_close(
        target.scales, torch.nn.functional.softplus(torch.ones(40, 2, dtype=torch.float64))
    )
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(40, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(
            means.double(), scale_tril=torch.diag_embed(target.scales)
        ),
    )
    x = 40 * torch.randn(128, 2, dtype=torch.float64)
    torch.testing.assert_close(target(x), reference.log_prob(x))


# --- samplers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2])
def test_double_well_sampler_matches_the_density(dim: int) -> None:
    samples = DoubleWell(dim).sample(20_000, generator=_generator(), dtype=torch.float64).numpy()
    assert samples.shape == (20_000, dim)
    first, _ = integrate.quad(_first_coordinate, -8, 8, limit=200)

    def cdf(values: np.ndarray) -> np.ndarray:
        return np.array(
            [integrate.quad(_first_coordinate, -8, v, limit=200)[0] / first for v in values]
        )

    # The exact distribution function on a grid, interpolated, for a Kolmogorov-Smirnov test.
    grid = np.linspace(-3.5, 3.5, 701)
    table = cdf(grid)
    first_test = stats.kstest(samples[:, 0], lambda v: np.interp(v, grid, table))
    assert first_test.pvalue > 1e-3
    if dim == 2:
        assert stats.kstest(samples[:, 1], "norm").pvalue > 1e-3
    deep, _ = integrate.quad(_first_coordinate, 0, 8, limit=200)
    share = float((samples[:, 0] > 0).mean())
    assert abs(share - deep / first) < 5 * math.sqrt(share * (1 - share) / 20_000)


def test_many_well_sampler_gives_independent_pairs() -> None:
    samples = ManyWell(8).sample(10_000, generator=_generator(1), dtype=torch.float64)
    deep = (samples[:, 0::2] > 0).double()
    # Each pair is in its deep well with the same probability, independently of the others.
    first, _ = integrate.quad(_first_coordinate, -8, 8)
    share, _ = integrate.quad(_first_coordinate, 0, 8)
    torch.testing.assert_close(
        deep.mean(0), torch.full((4,), share / first, dtype=torch.float64), atol=0.02, rtol=0
    )
    correlation = torch.corrcoef(deep.T)
    assert float((correlation - torch.eye(4, dtype=torch.float64)).abs().max()) < 0.05


def test_funnel_sampler_matches_its_construction() -> None:
    samples = Funnel(5, scale=3.0).sample(20_000, generator=_generator(2), dtype=torch.float64)
    v, rest = samples[:, 0], samples[:, 1:]
    assert stats.kstest(v.numpy() / 3.0, "norm").pvalue > 1e-3
    standardized = (rest * torch.exp(-v / 2)[:, None]).flatten().numpy()
    assert stats.kstest(standardized, "norm").pvalue > 1e-3


def test_mixture_and_gaussian_samplers_match_their_moments() -> None:
    mixture = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [3.0, 1.0]]), torch.tensor([0.5, 1.0]), torch.tensor([1.0, 3.0])
    )
    samples = mixture.sample(40_000, generator=_generator(3), dtype=torch.float64)
    expected = 0.25 * torch.tensor([-2.0, 0.0]) + 0.75 * torch.tensor([3.0, 1.0])
    torch.testing.assert_close(samples.mean(0), expected.double(), atol=0.04, rtol=0)
    gaussian = Gaussian([1.0, -1.0], [0.5, 2.0])
    draws = gaussian.sample(40_000, generator=_generator(4), dtype=torch.float64)
    torch.testing.assert_close(draws.mean(0), gaussian.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), gaussian.scale, atol=0.03, rtol=0)


def test_gmm40_samples_visit_every_mode() -> None:
    target = gmm40()
    samples = target.sample(4000, generator=_generator(5), dtype=torch.float64)
    nearest = torch.cdist(samples, target.means).argmin(-1)
    assert set(nearest.tolist()) == set(range(40))


def test_modes_found_counts_components_with_samples_near_their_mean() -> None:
    target = gmm40()
    generator = _generator(6)
    # Samples of 5 components only, and one far point that is near none.
    chosen = target.means[:5].repeat(3, 1) + 0.5 * torch.randn(15, 2, generator=generator).double()
    samples = torch.cat([chosen, torch.tensor([[100.0, 100.0]], dtype=torch.float64)])
    assert target.modes_found(samples) == 5
    assert target.modes_found(samples, minimum=4) == 0
    assert target.modes_found(samples, within=1e-6) == 0
    raises_with(ValueError, lambda: target.modes_found(torch.zeros(3, 3)), "(n, 2)", "(3, 3)")


def test_sampler_is_reproducible_and_follows_the_dtype() -> None:
    first = DoubleWell().sample(5, generator=_generator(9))
    assert first.dtype == torch.get_default_dtype()
    assert torch.equal(first, DoubleWell().sample(5, generator=_generator(9)))
    assert DoubleWell().sample(0).shape == (0, 2)


# --- bad input ------------------------------------------------------------------------------------
def test_bad_input_is_named() -> None:
    raises_with(ValueError, lambda: ManyWell(32)(torch.zeros(4, 30)), "event shape (32)", "(30)")
    raises_with(TypeError, lambda: TwoMoons()(torch.zeros(4, 2, dtype=torch.long)), "floating")
    raises_with(ValueError, lambda: ManyWell(5), "even dim", "got 5")
    raises_with(ValueError, lambda: DoubleWell(3), "dim in (1, 2)", "got 3")
    raises_with(NotImplementedError, lambda: TwoMoons().sample(3), "TwoMoons has no exact sampler")
    raises_with(ValueError, lambda: DoubleWell().sample(-1), "n", "got -1")
    raises_with(TypeError, lambda: DoubleWell().sample(2, dtype=torch.long), "floating dtype")
    raises_with(ValueError, lambda: Gaussian([0.0], [0.0]), "positive scales")
    raises_with(ValueError, lambda: Gaussian([0.0, 1.0], [1.0]), "scale of the mean's shape (2,)")
    raises_with(ValueError, lambda: GaussianMixture(torch.zeros(3), torch.ones(3)), "(K, dim)")
    raises_with(ValueError, lambda: Funnel(1), "dim", "got 1")
    raises_with(ValueError, lambda: RingMixture(0), "rings", "got 0")


def test_targets_keep_batch_dimensions_and_dtype() -> None:
    for target in (
        TwoMoons(),
        RingMixture(),
        DoubleWell(),
        Funnel(2),
        gmm40(),
        Gaussian([0.0, 0.0], [1.0, 1.0]),
    ):
        x = torch.randn(3, 4, 2)
        value = target(x)
        assert value.shape == (3, 4) and value.dtype == torch.float32
        torch.testing.assert_close(value, target(x.double()).float(), rtol=1e-4, atol=1e-3)
