"""The command line tells the truth: defaults shown, values checked once, results never replaced."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowkit import cli
from tests.cli.conftest import ROOT, flowkit

# A spline flow small enough to train a few steps in a fraction of a second.
TINY_TABLE = [
    "--preset",
    "nsf",
    "--set",
    "model.transforms=1",
    "--set",
    "model.hidden_features=8",
    "--batch-size",
    "32",
    "--max-steps",
    "2",
    "--no-progress",
    "--device",
    "cpu",
]


def write_csv(path: Path, columns: list[str], rows: np.ndarray) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(rows.tolist())
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    rows = np.random.default_rng(0).standard_normal((100, 3))
    return write_csv(tmp_path / "train.csv", ["a", "b", "c"], rows)


def one_error(capsys, *args: object) -> tuple[int, str]:
    """``flowkit ARGS`` in this process: its status and its only stderr line, an error."""
    status = cli.main([str(arg) for arg in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("flowkit: error: "), lines[0]
    return status, lines[0]


def train_table(capsys, table: Path, output: Path, *extra: object) -> None:
    args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", "--output", output]
    status = cli.main([str(arg) for arg in [*args, *extra]])
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()


# --- the end of a pipe -------------------------------------------------------------------------
def test_a_closed_pipe_ends_the_command_quietly():
    read_end, write_end = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "flowkit", "presets"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=env,
    )
    # The reader is gone before the command writes anything, as after 'head' has had its lines.
    os.close(write_end)
    os.close(read_end)
    _, err = process.communicate(timeout=60)
    assert err == b""
    assert process.returncode == 141


# --- a finished run is never started over ---------------------------------------------------
def test_resume_without_the_checkpoint_refuses_and_keeps_the_metrics(table, tmp_path, capsys):
    output = tmp_path / "run"
    train_table(capsys, table, output)
    (output / "checkpoint.pt").unlink()
    metrics = (output / "metrics.jsonl").read_text()
    args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", "--output", output]
    status, line = one_error(capsys, *args, "--resume")
    assert status == 1
    assert "checkpoint.pt" in line and "--overwrite" in line and "=True" not in line
    assert (output / "metrics.jsonl").read_text() == metrics
    # A run there and neither option: both options named, in the command line's words only.
    status, line = one_error(capsys, *args)
    assert "already holds a run" in line and "--resume" in line and "=True" not in line
    assert not (output / "checkpoint.pt").exists()


# --- --help --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    # One line per option: argparse wraps help at $COLUMNS, and may break words at hyphens.
    monkeypatch.setenv("COLUMNS", "1000")


def option_helps(command: str) -> dict[str, str]:
    """Each option of ``flowkit COMMAND --help``, by its first flag, with its help text."""
    parser = cli.build_parser()
    if command:
        [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = commands.choices[command]
    text = parser.format_help().split("options:\n", 1)[1]
    blocks = re.split(r"\n  (?=-)", "\n" + text.split("\n\n")[0])
    helps = {}
    for block in filter(str.strip, blocks):
        flag = block.split()[0].rstrip(",")
        helps[flag] = " ".join(block.split())
    return helps


@pytest.mark.parametrize(
    "command", ["", "train", "eval", "sample", "interpolate", "manipulate", "presets"]
)
def test_help_shows_every_default(command):
    helps = option_helps(command)
    assert len(helps) > 1
    for flag, text in helps.items():
        if flag in ("-h", "--version"):
            continue
        assert "default" in text or "(required)" in text, (flag, text)


def test_help_says_which_train_defaults_come_from_the_preset():
    from flowkit.train.config import TrainConfig

    helps = option_helps("train")
    for flag, field in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr")):
        default = TrainConfig.__dataclass_fields__[field].default
        assert f"from the preset or --config, else {default})" in helps[flag], helps[flag]


def test_data_help_names_the_table_formats_and_image_layouts():
    from flowkit.data.tables import TABLE_SUFFIXES

    text = option_helps("train")["--data"]
    for suffix in TABLE_SUFFIXES:
        assert suffix in text, suffix
    for layout in ("CIFAR", "idx", "ImageNet", "image folder"):
        assert layout in text, layout
    # Every run preset of a vector model family is named as a table preset, here and in errors.
    for name in _table_presets():
        assert name in text, name


def _table_presets() -> list[str]:
    from flowkit.presets.registry import get_model
    from flowkit.presets.runs import RUN_PRESETS

    return [name for name, run in RUN_PRESETS.items() if get_model(run.model_name).kind == "vector"]


# --- outputs are never replaced unasked, and never half-written ---------------------------------
def test_sample_refuses_to_replace_a_file_and_overwrites_it_whole_when_asked(
    table, tmp_path, capsys
):
    output = tmp_path / "run"
    train_table(capsys, table, output)
    checkpoint = output / "checkpoint.pt"
    target = tmp_path / "rows.csv"
    target.write_text("kept\n")
    status, line = one_error(capsys, "sample", checkpoint, "--num", "5", "--output", target)
    assert status == 1 and str(target) in line and "--overwrite" in line
    assert target.read_text() == "kept\n"
    args = ["sample", checkpoint, "--num", "5", "--output", target, "--overwrite"]
    assert cli.main([str(arg) for arg in args]) == 0
    lines = target.read_text().splitlines()
    assert lines[0] == "a,b,c" and len(lines) == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rows.csv", "run", "train.csv"]


def test_sample_writes_through_a_temporary_file(table, tmp_path, capsys, monkeypatch):
    from flowkit.data import tables

    output = tmp_path / "run"
    train_table(capsys, table, output)
    target = tmp_path / "rows.csv"
    target.write_text("kept\n")
    written = []

    def failing_write(path, values, columns):
        written.append(Path(path))
        Path(path).write_text("half a row")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tables, "write_table", failing_write)
    args = ["sample", output / "checkpoint.pt", "--output", target, "--overwrite"]
    status, line = one_error(capsys, *args)
    assert status == 1 and "No space left on device" in line
    # The file being replaced is intact and the temporary one is gone.
    assert target.read_text() == "kept\n"
    assert written and written[0] != target and not written[0].exists()


# --- every setting checked once, after merging, whatever its source ------------------------------
def from_each_source(tmp_path: Path, option: list[str], name: str, value: object) -> list[list]:
    """The same setting given as an option, as --set train.NAME=VALUE and in a config file."""
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"train": {name: value}}))
    return [option, ["--set", f"train.{name}={json.dumps(value)}"], ["--config", config]]


@pytest.mark.parametrize(
    "option, name, value",
    [
        (["--n-bits", "5"], "n_bits", 5),
        (["--augment-shift", "0.1"], "augment_shift", 0.1),
        (["--augment-flip"], "augment_flip", True),
    ],
    ids=["n-bits", "augment-shift", "augment-flip"],
)
def test_image_settings_on_a_table_run_are_refused_from_every_source(
    table, tmp_path, capsys, option, name, value
):
    lines = set()
    for source in from_each_source(tmp_path, option, name, value):
        args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", *source]
        status, line = one_error(capsys, *args, "--output", tmp_path / "o", "--print-config")
        assert status == 2
        lines.add(line)
    [line] = lines
    assert option[0] in line and "table" in line
    assert not (tmp_path / "o").exists()


def test_padding_on_a_table_run_is_refused(table, tmp_path, capsys):
    args = ["train", *TINY_TABLE, "--data", table, "--test-fraction", "0.2", "--print-config"]
    status, line = one_error(capsys, *args, "--set", "train.pad=2")
    assert status == 2 and "train.pad" in line and "table" in line


def test_table_settings_on_an_image_run_are_refused_from_every_source(tmp_path, capsys):
    lines = set()
    for source in from_each_source(tmp_path, ["--val-fraction", "0.2"], "val_fraction", 0.2):
        args = ["train", "--preset", "glow-small", *source, "--print-config"]
        status, line = one_error(capsys, *args)
        assert status == 2
        lines.add(line)
    [line] = lines
    assert "--val-fraction" in line and "images" in line

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"columns": ["a"]}))
    lines = set()
    for source in (["--columns", "a"], ["--config", config]):
        status, line = one_error(capsys, "train", "--preset", "glow-small", *source)
        assert status == 2
        lines.add(line)
    [line] = lines
    assert "--columns" in line and "images" in line


@pytest.mark.parametrize(
    "option, name, value",
    [
        (["--epochs", "0"], "epochs", 0),
        (["--lr", "-1"], "lr", -1),
        (["--batch-size", "0"], "batch_size", 0),
        (["--n-bits", "9"], "n_bits", 9),
        (["--augment-shift", "1.5"], "augment_shift", 1.5),
    ],
    ids=["epochs", "lr", "batch-size", "n-bits", "augment-shift"],
)
def test_a_bad_value_has_one_message_whatever_its_source(tmp_path, capsys, option, name, value):
    lines = set()
    for source in from_each_source(tmp_path, option, name, value):
        status, line = one_error(capsys, "train", "--preset", "glow-small", *source)
        assert status == 2
        lines.add(line)
    [line] = lines
    assert option[0] in line and option[1] in line


def test_values_are_checked_after_merging(tmp_path, capsys):
    # A bad value in the config file that an option replaces never reaches the run.
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"preset": "glow-small", "train": {"epochs": 0}}))
    assert cli.main(["train", "--config", str(config), "--epochs", "2", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["epochs"] == 2


@pytest.mark.parametrize("preset", [[], ["--preset", "glow-small"]], ids=["no-preset", "glow"])
@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz"])
def test_a_table_given_to_an_image_model_suggests_the_table_presets(
    tmp_path, capsys, preset, suffix
):
    path = tmp_path / f"data{suffix}"
    values = np.zeros((10, 2))
    if suffix == ".csv":
        write_csv(path, ["a", "b"], values)
    elif suffix == ".npy":
        np.save(path, values)
    else:
        np.savez(path, a=values[:, 0], b=values[:, 1])
    status, line = one_error(capsys, "train", *preset, "--data", path, "--output", tmp_path / "o")
    assert status == 2 and str(path) in line
    assert set(line.split("--preset ")[-1].split("|")) == set(_table_presets())
    assert not (tmp_path / "o").exists()


# --- a run's config.json repeats it from anywhere ------------------------------------------------
def test_config_json_repeats_the_run_from_another_directory(tmp_path, capsys, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write_csv(first / "train.csv", ["a", "b"], np.random.default_rng(1).standard_normal((80, 2)))
    monkeypatch.chdir(first)
    args = ["train", *TINY_TABLE, "--data", "train.csv", "--test-fraction", "0.2"]
    assert cli.main([*args, "--output", "runs/x"]) == 0
    monkeypatch.chdir(second)
    config = first / "runs" / "x" / "config.json"
    assert cli.main(["train", "--config", str(config), "--output", "again", "--no-progress"]) == 0
    capsys.readouterr()
    recorded = json.loads(config.read_text())
    repeated = json.loads((second / "again" / "config.json").read_text())
    assert repeated["train"]["data"] == str(first / "train.csv")
    assert repeated["data"]["columns"] == recorded["data"]["columns"]
    # The same data, split and seed: the same test rows and the same first evaluation.
    first_metrics = (first / "runs" / "x" / "metrics.jsonl").read_text().splitlines()[0]
    again_metrics = (second / "again" / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(first_metrics)["test_nll"] == json.loads(again_metrics)["test_nll"]


# --- progress in a log ----------------------------------------------------------------------------
def test_a_log_gets_one_line_per_epoch_with_the_loss_and_the_evaluations(table, tmp_path):
    output = tmp_path / "run"
    args = [arg for arg in TINY_TABLE if arg != "--no-progress"]
    args[args.index("--max-steps") : args.index("--max-steps") + 2] = ["--epochs", "3"]
    result = flowkit("train", *args, "--data", table, "--test-fraction", "0.2", "--output", output)
    assert result.status == 0, result.stderr
    assert "\r" not in result.stderr
    # Other lines (a note on the batch size) may come first; the epochs are one line each.
    lines = [line for line in result.stderr.splitlines() if "epoch" in line and "step" in line]
    assert [line.split(" (step")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r.get("event") == "epoch"]
    for line, record in zip(lines, evaluations):
        assert f"(step {record['step']}): train nll " in line
        assert f"test nll {record['test_nll']:.4f}" in line
        assert f"val nll {record['val_nll']:.4f}" in line


# --- TarFlow's training noise has one owner ----------------------------------------------------
@pytest.mark.parametrize("value", ["0.05", "0"])
def test_a_train_noise_that_disagrees_with_tarflows_is_refused(capsys, value):
    args = ["train", "--preset", "tarflow-small", "--set", f"train.noise_std={value}"]
    status, line = one_error(capsys, *args, "--print-config")
    assert status == 2 and f"train.noise_std={value}" in line and "model.noise_std" in line


def test_tarflows_noise_is_set_on_the_model_and_turned_off_by_no_augment(capsys):
    effective = {}
    for extra in ([], ["--set", "model.noise_std=0.1"], ["--no-augment"]):
        args = ["train", "--preset", "tarflow-small", *extra, "--print-config"]
        assert cli.main(args) == 0
        settings = json.loads(capsys.readouterr().out)
        effective[" ".join(extra)] = (
            settings["model"]["noise_std"],
            settings["train"]["noise_std"],
        )
    assert effective == {
        "": (0.05, 0.0),
        "--set model.noise_std=0.1": (0.1, 0.0),
        "--no-augment": (0.0, 0.0),
    }


# --- values the model's precision cannot compute with ------------------------------------------
def test_a_context_value_that_overflows_the_model_names_the_option(tmp_path, capsys):
    rng = np.random.default_rng(0)
    context = rng.uniform(-1, 1, 100)
    rows = np.stack([context + 0.1 * rng.standard_normal(100), rng.standard_normal(100), context])
    data = write_csv(tmp_path / "data.csv", ["y", "z", "c"], rows.T)
    output = tmp_path / "run"
    train_table(capsys, data, output, "--context-columns", "c")
    checkpoint = output / "checkpoint.pt"
    target = tmp_path / "rows.csv"
    status, line = one_error(
        capsys, "sample", checkpoint, "--context", "c=1e39", "--output", target
    )
    assert status == 2 and "--context c=1e+39" in line and "float32" in line
    assert not target.exists()
    # An ordinary value samples.
    assert cli.main(["sample", str(checkpoint), "--context", "c=0.5", "--output", str(target)]) == 0


def test_a_row_that_overflows_the_model_names_its_column(table, tmp_path, capsys):
    rows = np.random.default_rng(2).standard_normal((20, 3))
    rows[7, 1] = 1e30
    test = write_csv(tmp_path / "test.csv", ["a", "b", "c"], rows)
    args = ["train", *TINY_TABLE, "--data", table, "--test-data", test]
    status, line = one_error(capsys, *args, "--output", tmp_path / "o")
    assert status == 1 and str(test) in line and "column 'b'" in line and "row 8" in line
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
    # eval on such rows says the same.
    output = tmp_path / "run"
    train_table(capsys, table, output)
    status, line = one_error(capsys, "eval", output / "checkpoint.pt", "--data", test)
    assert status == 1 and "column 'b'" in line and "row 8" in line and "float32" in line


@pytest.mark.parametrize("command", ["interpolate", "manipulate"])
def test_image_outputs_are_not_replaced_unasked(glow_run, tmp_path, capsys, command):
    target = tmp_path / "grid.png"
    target.write_bytes(b"kept")
    args = [command, glow_run / "checkpoint.pt", "--output", target]
    if command == "manipulate":
        args += ["--attribute", "1", "--num-reference", "64"]
    status, line = one_error(capsys, *args)
    assert status == 1 and str(target) in line and "--overwrite" in line
    assert target.read_bytes() == b"kept"
    assert cli.main([str(arg) for arg in [*args, "--overwrite"]]) == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    assert [path.name for path in tmp_path.iterdir()] == ["grid.png"]
