"""``flowkit sample`` with TarFlow's guidance options: each changes the grid as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowkit import cli

from .conftest import TINY_RUN

SHRINK = ["model.channels=8", "model.blocks=2", "model.layers_per_block=1", "model.heads=2"]


def _train(output: Path, *settings: str) -> Path:
    items = [item for value in (*SHRINK, *settings) for item in ("--set", value)]
    status = cli.main(
        ["train", "--preset", "tarflow-small", *items, *TINY_RUN, "--output", str(output)]
    )
    assert status == 0
    return output / "checkpoint.pt"


@pytest.fixture(scope="module")
def conditional(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("tarflow") / "run", "model.num_classes=10")


def _grid(checkpoint: Path, output: Path, *options: str) -> bytes:
    status = cli.main(
        [
            "sample",
            str(checkpoint),
            "--num",
            "4",
            "--temperatures",
            "0.7",
            "--output",
            str(output),
            *options,
        ]
    )
    assert status == 0
    return (output / "samples_t0.70.png").read_bytes()


def test_each_guidance_option_changes_the_grid(conditional, tmp_path, capsys) -> None:
    # Two training steps leave the class embeddings barely apart: give them room to guide.
    model = torch.load(conditional, map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for key, value in model["model"].items():
        if key.endswith("class_embedding"):
            value.add_(torch.randn(value.shape, generator=generator))
        if key.endswith("output.weight"):
            value.add_(0.02 * torch.randn(value.shape, generator=generator))
    torch.save(model, conditional)
    grids = {}
    for name, options in {
        "default": [],
        "zero": ["--guidance", "0", "--annealed-guidance", "--guide-what", "a"],
        "one": ["--attention-temperature", "1"],
        "guided": ["--guidance", "3"],
        "annealed": ["--guidance", "3", "--annealed-guidance"],
        "shifts": ["--guidance", "3", "--guide-what", "b"],
        "tempered": ["--guidance", "3", "--attention-temperature", "0.5"],
    }.items():
        grids[name] = _grid(conditional, tmp_path / name, "--weights", "raw", *options)
    capsys.readouterr()
    assert grids["zero"] == grids["default"] and grids["one"] == grids["default"]
    changed = ["guided", "annealed", "shifts", "tempered"]
    assert len({grids[name] for name in ["default", *changed]}) == 5


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--guidance", "-1"], "--guidance expects a finite number >= 0, got -1"),
        (["--guidance", "nan"], "--guidance"),
        (["--attention-temperature", "0"], "--attention-temperature expects a finite number > 0"),
    ],
)
def test_bad_guidance_values_are_one_line(conditional, tmp_path, capsys, options, fragment):
    status = cli.main(["sample", str(conditional), "--output", str(tmp_path / "g"), *options])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert lines[0].startswith("flowkit: error: ")
    assert not (tmp_path / "g").exists()


def test_guidance_of_a_model_without_classes_needs_an_attention_temperature(tmp_path, capsys):
    checkpoint = _train(tmp_path / "run")
    status = cli.main(
        ["sample", str(checkpoint), "--output", str(tmp_path / "g"), "--guidance", "1"]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "no classes" in lines[0], lines
    grid = _grid(checkpoint, tmp_path / "t", "--guidance", "1", "--attention-temperature", "0.5")
    assert grid != _grid(checkpoint, tmp_path / "d")


def test_guidance_options_are_refused_for_other_models(glow_run, tmp_path, capsys):
    checkpoint = glow_run / "checkpoint.pt"
    status = cli.main(
        ["sample", str(checkpoint), "--output", str(tmp_path / "g"), "--guidance", "1"]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, lines
    assert "sample TarFlow models" in lines[0] and str(checkpoint) in lines[0]
