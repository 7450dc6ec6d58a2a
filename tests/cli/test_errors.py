"""Every failure of the command line is one ``flowkit: error:`` line and an exit status."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowkit import cli
from tests.cli.conftest import assert_one_error_line, flowkit


def run_main(capsys, *args: str) -> tuple[int, str]:
    """``flowkit ARGS`` in this process: the status and the error line (exactly one)."""
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("flowkit: error: "), lines[0]
    return status, lines[0]


# --- in a fresh interpreter: each kind of failure once ------------------------------------------
def test_missing_data_is_a_run_time_failure(tmp_path):
    missing = tmp_path / "nowhere"
    result = flowkit(
        "train", "--preset", "glow-small", "--data", missing, "--output", tmp_path / "o"
    )
    assert_one_error_line(result, 1, str(missing))
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_a_truncated_checkpoint_is_named(glow_run, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes((glow_run / "checkpoint.pt").read_bytes()[:2000])
    assert_one_error_line(flowkit("eval", path), 1, str(path), "corrupt")


def test_usage_errors_exit_2_in_one_line(glow_run):
    result = flowkit("eval", glow_run / "checkpoint.pt", "--batch-size", "0")
    assert_one_error_line(result, 2, "--batch-size", "0")


def test_argparse_errors_keep_their_usage_and_exit_2():
    result = flowkit("eval", "--no-such-flag")
    assert result.status == 2
    assert "Traceback" not in result.stderr
    assert result.error_lines[0].startswith("usage: flowkit eval")
    assert result.error_lines[-1].startswith("flowkit eval: error:")


def test_debug_shows_the_traceback_and_keeps_the_status(tmp_path):
    missing = str(tmp_path / "missing.pt")
    result = flowkit("eval", missing, "--debug")
    assert result.status == 1
    assert "Traceback" in result.stderr
    assert result.error_lines[-1] == f"flowkit: error: no checkpoint at {missing}"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_a_full_disk_is_one_line(glow_run):
    result = flowkit("interpolate", glow_run / "checkpoint.pt", "--output", "/dev/full")
    assert_one_error_line(result, 1, "No space left on device")


# --- in this process: the value checks ----------------------------------------------------------
@pytest.mark.parametrize(
    "content, fragment",
    [(None, "no checkpoint"), (b"\x8a" * 100, "corrupt")],
    ids=["missing", "random-bytes"],
)
def test_bad_checkpoints_are_named(tmp_path, capsys, content, fragment):
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    status, line = run_main(capsys, "eval", path)
    assert status == 1 and str(path) in line and fragment in line


def test_debug_before_the_command_prints_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    assert cli.main(["--debug", "eval", missing]) == 1
    error = capsys.readouterr().err
    assert "Traceback" in error and error.splitlines()[-1].endswith(f"no checkpoint at {missing}")


def test_nonfinite_evaluation_is_an_error_naming_the_checkpoint(glow_run, tmp_path, capsys):
    state = torch.load(glow_run / "checkpoint.pt", weights_only=True)
    for weights in [state["model"]] + ([state["ema"]] if state.get("ema") else []):
        for value in weights.values():
            if value.is_floating_point() and value.dim() > 0:
                value.fill_(float("nan"))
    broken = tmp_path / "checkpoint.pt"
    torch.save(state, broken)
    status, line = run_main(capsys, "eval", broken, "--json", "--num-test", "8")
    assert status == 1
    assert str(broken) in line and "--weights raw" in line and "non-finite" in line
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["eval", "{ckpt}", "--num-test", "0"], ["--num-test", "0"]),
        (["eval", "{ckpt}", "--num-test", "-3"], ["--num-test", "-3"]),
        (["eval", "{ckpt}", "--batch-size", "-1"], ["--batch-size", "-1"]),
        (["eval", "{ckpt}", "--data", ""], ["--data", "empty"]),
        (["eval", "{ckpt}", "--device", "cuda"], ["CUDA is not available", "cpu"]),
        (["eval", "{ckpt}", "--device", "tpu9"], ["--device", "tpu9"]),
        (["sample", "{ckpt}", "--num", "0"], ["--num", "0"]),
        (["sample", "{ckpt}", "--temperatures", "-1"], ["--temperatures", "-1"]),
        (["sample", "{ckpt}", "--temperatures", "inf"], ["--temperatures", "inf"]),
        (["sample", "{ckpt}", "--temperatures", "nan"], ["--temperatures", "nan"]),
        (["sample", "{ckpt}", "--label", "3"], ["--label", "not class-conditional"]),
        (["sample", "{ckpt}", "--output", ""], ["--output", "empty"]),
        (["interpolate", "{ckpt}", "--steps", "1"], ["--steps", "1"]),
        (["interpolate", "{ckpt}", "--first", "0", "1", "--second", "2"], ["--second", "2 and 1"]),
        (["interpolate", "{ckpt}", "--first", "1000"], ["--first", "[0, 1000)", "1000"]),
        (["interpolate", "{ckpt}", "--second", "-1"], ["--second", "-1"]),
        (["manipulate", "{ckpt}", "--attribute", "12"], ["--attribute 12", "labels"]),
        (["manipulate", "{ckpt}", "--attribute", "1", "--indices", "5000"], ["--indices"]),
        (["manipulate", "{ckpt}", "--attribute", "1", "--steps", "1"], ["--steps", "1"]),
        (["train", "--num-classes", "1", "--print-config"], ["num_classes", "1"]),
        (["train", "--batch-size", "0"], ["--batch-size", "0"]),
        (["train", "--epochs", "0"], ["--epochs", "0"]),
        (["train", "--max-steps", "0"], ["--max-steps", "0"]),
        (["train", "--lr", "0"], ["--lr", "0"]),
        (["train", "--lr", "nan"], ["--lr", "nan"]),
        (["train", "--data", ""], ["--data", "empty"]),
        (["train", "--output", ""], ["--output", "empty"]),
        (["train", "--test-fraction", "1.5"], ["--test-fraction", "1.5"]),
        (["train", "--device", "cuda:0"], ["CUDA is not available", "cpu"]),
        (["train", "--resume", "--overwrite"], ["--resume", "--overwrite"]),
        (["train", "--preset", "glow-huge"], ["unknown preset", "glow-small"]),
        (["train", "--set", "model.depth=3"], ["unknown model setting", "depth"]),
        (["train", "--set", "lr=3"], ["section.name=value", "lr=3"]),
        (["train", "--config", ""], ["--config", "empty"]),
        (["train", "--set", "train.batch_size=0"], ["--batch-size", "0"]),
        (["train", "--set", "train.augment_shift=2"], ["--augment-shift", "2"]),
        (["train", "--preset", "nsf", "--n-bits", "5"], ["--n-bits", "table"]),
        (["train", "--preset", "nsf", "--set", "train.pad=2"], ["train.pad", "table"]),
        (["train", "--columns", "a"], ["--columns", "images"]),
        (["train", "--data", "rows.csv"], ["rows.csv", "--preset nsf|maf|realnvp-tabular|naf"]),
        (
            ["train", "--preset", "tarflow-small", "--set", "train.noise_std=0.1"],
            ["train.noise_std=0.1", "model.noise_std"],
        ),
    ],
)
def test_bad_values_are_usage_errors_naming_the_value(glow_run, capsys, args, fragments):
    checkpoint = str(glow_run / "checkpoint.pt")
    status, line = run_main(capsys, *[arg.replace("{ckpt}", checkpoint) for arg in args])
    assert status == 2, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_manipulate_needs_labels(glow_run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "unlabelled"
    (folder / "test").mkdir(parents=True)
    for index in range(3):
        Image.new("L", (28, 28), color=40 * index).save(folder / "test" / f"{index}.png")
    status, line = run_main(
        capsys, "manipulate", glow_run / "checkpoint.pt", "--data", folder, "--attribute", "0"
    )
    assert status == 2 and "labelled" in line and str(folder) in line


def test_an_image_folder_without_a_test_split_asks_for_one(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (28, 28)).save(folder / "a.png")
    status, line = run_main(
        capsys, "train", "--data", folder, "--output", tmp_path / "o", "--no-progress"
    )
    assert status == 2 and "--test-data" in line and "test/" in line
    assert not (tmp_path / "o").exists()


class _Raising(dict):
    """A preset table whose listing raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def items(self):
        raise self.error


def test_ctrl_c_outside_training_is_one_line_and_130(monkeypatch, capsys):
    monkeypatch.setattr("flowkit.presets.runs.RUN_PRESETS", _Raising(KeyboardInterrupt()))
    assert cli.main(["presets"]) == 130
    assert capsys.readouterr().err == "flowkit: interrupted\n"


def test_an_unexpected_exception_is_one_line_naming_its_type(monkeypatch, capsys):
    monkeypatch.setattr("flowkit.presets.runs.RUN_PRESETS", _Raising(KeyError("weights")))
    status, line = run_main(capsys, "presets")
    assert status == 1 and "KeyError" in line and "--debug" in line


def test_help_does_not_start_training(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--print-config" in capsys.readouterr().out
