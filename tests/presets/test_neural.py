"""presets.naf and presets.umnn: normalised densities, sampling, settings, and the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import flowkit
from flowkit import cli
from flowkit.presets import NAFConfig, UMNNConfig, build_model, naf, umnn

FLOWS = {
    "naf-dsf": lambda: naf(2, transforms=2, sigmoids=4, layers=2, hidden_features=(16,), seed=0),
    "naf-ddsf-coupling": lambda: naf(
        2,
        transforms=2,
        transformer="ddsf",
        sigmoids=4,
        layers=2,
        hidden_features=(16,),
        autoregressive=False,
        seed=1,
    ),
    "umnn": lambda: umnn(
        2,
        transforms=2,
        signal=4,
        integrand_features=(16,),
        nodes=17,
        hidden_features=(16,),
        seed=2,
    ),
    "umnn-coupling": lambda: umnn(
        2,
        transforms=2,
        signal=4,
        integrand_features=(16,),
        nodes=17,
        hidden_features=(16,),
        autoregressive=False,
        seed=3,
    ),
}


def _perturbed(flow: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The flow with its weights moved, so that no step is close to the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.1 * noise)
    return flow


@pytest.mark.parametrize("name", FLOWS)
def test_density_integrates_to_one_on_a_grid(name):
    flow = _perturbed(FLOWS[name](), seed=4).double()
    points = torch.linspace(-12, 12, 201, dtype=torch.float64)
    grid = torch.cartesian_prod(points, points)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    step = float(points[1] - points[0])
    assert abs(float(density.sum()) * step**2 - 1) < 0.01


@pytest.mark.parametrize("name", FLOWS)
def test_samples_have_the_flows_log_density(name):
    flow = _perturbed(FLOWS[name](), seed=5).double()
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob(64)
        torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-7, atol=1e-7)


def test_a_umnn_stored_before_per_feature_integrands_rebuilds_its_shared_layout():
    from flowkit.presets.registry import config_from_stored, config_to_dict

    settings = dict(transforms=2, signal=4, integrand_features=(8,), nodes=9, hidden_features=(8,))
    earlier_config = UMNNConfig(3, shared_integrand=True, seed=6, **settings)
    earlier = _perturbed(build_model("umnn", earlier_config), seed=7)
    stored = config_to_dict(earlier_config)
    del stored["shared_integrand"]
    config = config_from_stored("umnn", stored)
    assert config.shared_integrand
    rebuilt = build_model("umnn", config)
    rebuilt.load_state_dict(earlier.state_dict())  # the same layout, strictly
    x = torch.randn(6, 3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.log_prob(x), earlier.log_prob(x), rtol=0, atol=0)
    # Stored since, the field is kept; new models give each feature its own network.
    current_config = UMNNConfig(3, seed=6, **settings)
    assert not config_from_stored("umnn", config_to_dict(current_config)).shared_integrand
    with pytest.raises(RuntimeError, match="integrand"):
        build_model("umnn", current_config).load_state_dict(earlier.state_dict())


def test_configs_refuse_bad_settings():
    with pytest.raises(ValueError, match="transformer"):
        NAFConfig(2, transformer="spline")
    with pytest.raises(ValueError, match="sigmoids"):
        NAFConfig(2, sigmoids=0)
    with pytest.raises(ValueError, match="nodes"):
        UMNNConfig(2, nodes=1)
    with pytest.raises(ValueError, match="features >= 2"):
        UMNNConfig(1, autoregressive=False)
    with pytest.raises(ValueError, match="residual"):
        NAFConfig(3, autoregressive=False, residual=True)


def test_a_config_rebuilds_the_same_model():
    config = {"features": 3, "transforms": 1, "sigmoids": 3, "hidden_features": [8], "seed": 7}
    first, second = build_model("naf", config), build_model("naf", config)
    x = torch.randn(5, 3)
    torch.testing.assert_close(first.log_prob(x), second.log_prob(x))


def _write_table(path: Path, rows: np.ndarray) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["a", "b"])
        writer.writerows(rows.tolist())
    return path


@pytest.mark.parametrize(
    "preset, model_settings",
    [
        ("naf", ["model.sigmoids=4"]),
        ("umnn", ["model.signal=4", "model.integrand_features=8", "model.nodes=9"]),
    ],
)
def test_train_eval_sample_and_load_a_table(tmp_path, capsys, preset, model_settings):
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 250)
    rows = np.stack([2 * np.cos(angle), np.sin(angle)], axis=1) + 0.1 * rng.normal(size=(250, 2))
    table = _write_table(tmp_path / "rows.csv", rows)
    output = tmp_path / "run"
    settings = [
        "--set",
        "model.transforms=1",
        "--set",
        "model.hidden_features=8",
        *[part for setting in model_settings for part in ("--set", setting)],
    ]
    status = cli.main(
        [
            "train",
            "--preset",
            preset,
            "--data",
            str(table),
            "--test-fraction",
            "0.2",
            *settings,
            "--max-steps",
            "6",
            "--no-progress",
            "--device",
            "cpu",
            "--output",
            str(output),
        ]
    )
    assert status == 0
    recorded = json.loads((output / "config.json").read_text())
    assert recorded["preset"] == preset
    capsys.readouterr()
    checkpoint = output / "checkpoint.pt"
    assert cli.main(["eval", str(checkpoint), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 50 and np.isfinite(report["nll"])
    samples = tmp_path / "samples.csv"
    assert cli.main(["sample", str(checkpoint), "--num", "7", "--output", str(samples)]) == 0
    with open(samples, newline="") as file:
        lines = list(csv.reader(file))
    assert lines[0] == ["a", "b"] and len(lines) == 8
    flow = flowkit.load(checkpoint)
    # The loaded model gives every row a finite density, and its NLL over all rows is near the
    # test NLL eval reported on a fifth of them.
    with torch.no_grad():
        log_prob = flow.log_prob(torch.as_tensor(rows, dtype=torch.float32))
    assert bool(torch.isfinite(log_prob).all())
    assert abs(-float(log_prob.mean()) - report["nll"]) < 0.5
