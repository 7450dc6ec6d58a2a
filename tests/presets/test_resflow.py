"""Residual flow presets: a normalised density, the image variant, the command line end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit import cli, initialize, load
from flowkit.bijectors import ResidualBlock
from flowkit.nn import refresh_spectral_norm
from flowkit.presets import ResFlowConfig, resflow, resflow_image
from tests.cli.test_tables import read_csv, ring, write_csv

# Half-width of the integration grid: scrambled blocks shift and stretch mass a long way (samples
# reach |x| ~ 12 here), so the grid reaches well past that.
GRID_BOUND = 20.0
GRID_POINTS = 401
# Evaluations averaged to compare the estimated log-density with the exact one.
ESTIMATES = 100


def _scramble(flow: torch.nn.Module, seed: int) -> None:
    """Move every block's weights so that the blocks are far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    blocks = [m for m in flow.modules() if isinstance(m, ResidualBlock)]
    with torch.no_grad():
        for parameter in (p for block in blocks for p in block.parameters()):
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    refresh_spectral_norm(flow)


def test_two_dimensional_density_integrates_to_one() -> None:
    flow = resflow(2, blocks=3, hidden_features=(16,), coefficient=0.9, seed=0).double()
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(256, 2, generator=generator, dtype=torch.float64)
    initialize(flow, data * torch.tensor([2.0, 0.5], dtype=torch.float64))
    _scramble(flow, 0)
    flow.eval()
    axis = torch.linspace(-GRID_BOUND, GRID_BOUND, GRID_POINTS, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    cell = (axis[1] - axis[0]) ** 2
    total = float(density.sum() * cell)
    assert abs(total - 1) < 0.01, total
    # The density is not the base's: the blocks bend it.
    base = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(-1).exp()
    assert float((density - base).abs().max()) > 0.01


def test_sampling_inverts_density_evaluation() -> None:
    flow = resflow(3, blocks=2, hidden_features=(16,), seed=1).double()
    initialize(flow, torch.randn(64, 3, dtype=torch.float64))
    _scramble(flow, 1)
    flow.eval()
    with torch.no_grad():
        x = flow.sample(32)
        z = flow.encode(x)
        again = flow.decode(z)
    torch.testing.assert_close(again, x)
    assert torch.isfinite(flow.log_prob(x)).all()


def test_estimated_and_exact_evaluation_agree_on_average() -> None:
    flow = resflow(2, blocks=2, hidden_features=(16,), eval_log_det="russian_roulette", seed=2)
    flow = flow.double()
    exact = resflow(2, blocks=2, hidden_features=(16,), seed=2).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    for model in (flow, exact):
        initialize(model, x)
    exact.load_state_dict(flow.state_dict())
    flow.eval(), exact.eval()
    with torch.no_grad():
        draws = torch.stack([flow.log_prob(x) for _ in range(ESTIMATES)])
        truth = exact.log_prob(x)
    error = (draws.mean(0) - truth).abs()
    assert bool((error < 4.5 * draws.std(0) / ESTIMATES**0.5).all()), error


def test_image_variant_round_trip_and_training_step() -> None:
    flow = resflow_image((1, 4, 4), levels=2, blocks_per_level=1, hidden_channels=4, seed=0)
    x = torch.randn(6, 1, 4, 4)
    initialize(flow, x)
    assert [type(part).__name__ for part in flow.bijector].count("Squeeze") == 1
    loss = -flow.log_prob(x).mean()
    loss.backward()
    blocks = [m for m in flow.modules() if isinstance(m, ResidualBlock)]
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for block in blocks
        for p in block.parameters()
        if p.dim() == 4
    )
    flow.eval()
    with torch.no_grad():
        z = flow.encode(x)
        torch.testing.assert_close(flow.decode(z), x, atol=1e-4, rtol=0)
        assert flow.sample(3).shape == (3, 1, 4, 4)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="coefficient"):
        ResFlowConfig(2, coefficient=1.0)
    with pytest.raises(ValueError, match="log_det in"):
        ResFlowConfig(2, log_det="hutchinson")
    with pytest.raises(ValueError, match="H and W divisible by 2"):
        resflow_image((1, 5, 4), levels=2)


def test_command_line_train_eval_sample_load(tmp_path: Path, capsys) -> None:
    data = write_csv(tmp_path / "table.csv", ["a", "b"], ring(400, seed=0))
    output = tmp_path / "run"
    train = ["train", "--preset", "resflow", "--data", str(data), "--test-fraction", "0.2"]
    tiny = ["--set", "model.blocks=2", "--set", "model.hidden_features=16", "--batch-size", "64"]
    run = ["--max-steps", "30", "--no-progress", "--device", "cpu", "--output", str(output)]
    assert cli.main([*train, *tiny, *run]) == 0
    checkpoint = str(output / "checkpoint.pt")
    capsys.readouterr()
    reports = []
    for _ in range(2):
        assert cli.main(["eval", checkpoint, "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert math.isfinite(reports[0]["nll"]) and reports[0]["examples"] == 80
    # Evaluation is exact for two features: a second evaluation gives the same number.
    assert reports[1]["nll"] == reports[0]["nll"]
    target = tmp_path / "samples.csv"
    assert cli.main(["sample", checkpoint, "--num", "50", "--output", str(target)]) == 0
    columns, values = read_csv(target)
    assert columns == ["a", "b"] and values.shape == (50, 2) and np.isfinite(values).all()
    model = load(checkpoint)
    assert sum(isinstance(m, ResidualBlock) for m in model.modules()) == 2
    capsys.readouterr()
    bad = ["--set", "model.coefficient=1.5", "--output", str(tmp_path / "bad"), "--print-config"]
    assert cli.main([*train, *bad]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("flowkit: error:") and "coefficient" in line
    assert len(line.splitlines()) == 1


def test_a_resflow_run_resumes_exactly(tmp_path):
    # The unbiased log-determinant draws from each block's generator; its state is saved with the
    # weights, so an interrupted run draws what the uninterrupted one drew.
    from flowkit.train import TrainConfig, Trainer

    rows = torch.randn(96, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 3])

    def run(output, resume=False, **overrides):
        settings = dict(
            output=str(output),
            batch_size=16,
            epochs=2,
            lr=0.01,
            optimizer="adam",
            warmup_epochs=0.0,
            ema=False,
            progress=False,
            device="cpu",
        )
        settings.update(overrides)
        flow = resflow(2, blocks=2, hidden_features=(8,), seed=0)
        return Trainer(flow, TrainConfig(**settings), rows, rows[:32]).fit(resume=resume)

    whole = run(tmp_path / "whole")
    first = run(tmp_path / "split", max_steps=5)
    second = run(tmp_path / "split", resume=True)
    assert first.train_losses + second.train_losses == whole.train_losses
