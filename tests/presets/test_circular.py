"""ncsf: a density on the torus that integrates to 1, its config's checks, and fitting angles."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit
from flowkit.presets import NCSFConfig, build_ncsf, ncsf


def _randomise(flow: torch.nn.Module, scale: float, seed: int) -> None:
    """Move every weight (the zero output layers too), so the flow is far from its base."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(autoregressive=True, base="von_mises", concentration=2.0)],
    ids=["coupling-uniform", "autoregressive-von-mises"],
)
def test_density_on_the_torus_integrates_to_one(options: dict) -> None:
    flow = ncsf(2, transforms=3, bins=6, hidden_features=(16,), seed=0, **options).double()
    # Small enough that the density's features are wider than the grid's cells.
    _randomise(flow, 0.2, seed=1)
    cells = 250
    ticks = (torch.arange(cells, dtype=torch.float64) + 0.5) / cells * 2 * math.pi - math.pi
    grid = torch.cartesian_prod(ticks, ticks)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    total = float(density.sum() * (2 * math.pi / cells) ** 2)
    assert abs(total - 1.0) < 0.01, total
    # Not the base: the randomised flow moved the density.
    assert float(density.max() / density.min()) > 2.0


def test_samples_are_angles_and_round_trip() -> None:
    flow = ncsf(3, transforms=2, bins=4, hidden_features=(8,), seed=0).double()
    _randomise(flow, 0.3, seed=2)
    x = flow.sample(200)
    assert bool(((x >= -math.pi) & (x < math.pi)).all())
    z = flow.encode(x)
    back = flow.decode(z)
    error = torch.remainder(back - x + math.pi, 2 * math.pi) - math.pi
    assert float(error.abs().max()) < 1e-9


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="features >= 2 to split, got 1"):
        NCSFConfig(1)
    with pytest.raises(ValueError, match=r"base in \('uniform', 'von_mises'\), got 'normal'"):
        NCSFConfig(2, base="normal")
    with pytest.raises(ValueError, match="concentration"):
        NCSFConfig(2, base="von_mises", concentration=0.0)
    assert isinstance(
        build_ncsf(NCSFConfig(1, autoregressive=True)).base, flowkit.distributions.CircularUniform
    )


def test_fit_keeps_angles_unstandardised_and_refuses_others() -> None:
    torch.manual_seed(0)
    angles = torch.distributions.VonMises(torch.tensor([2.5, -2.5]), torch.tensor([3.0, 3.0]))
    data = angles.sample((512,))
    data = torch.remainder(data + math.pi, 2 * math.pi) - math.pi
    flow = ncsf(2, transforms=2, bins=6, hidden_features=(16,), seed=0)
    result = flowkit.fit(flow, data, epochs=3, lr=5e-3)
    assert result.flow is flow  # no standardisation wrapped around it
    uniform = 2 * math.log(2 * math.pi)
    assert -float(flow.log_prob(data).mean()) < uniform - 0.1
    outside = torch.tensor([[0.0, 0.0], [4.0, 0.0]] * 8)
    with pytest.raises(ValueError, match=r"values in \[-3.14159, 3.14159\), got 4.0 in row"):
        flowkit.fit(ncsf(2, transforms=1, hidden_features=(8,)), outside)


def test_nsf_spline_option_reaches_every_step() -> None:
    from flowkit.bijectors import CubicSplineMap, LinearSplineMap

    flow = flowkit.presets.nsf(3, transforms=2, bins=4, hidden_features=(8,), spline="cubic")
    maps = [m for m in flow.modules() if isinstance(m, CubicSplineMap)]
    assert len(maps) == 2
    flow = flowkit.presets.nsf(3, transforms=2, autoregressive=True, spline="linear")
    assert sum(isinstance(m, LinearSplineMap) for m in flow.modules()) == 2
    with pytest.raises(ValueError, match="spline in"):
        flowkit.presets.nsf(3, spline="hermite")
