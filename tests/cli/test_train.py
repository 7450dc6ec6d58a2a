"""``flowkit train``: settings, test sets, and runs that must not be lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowkit import cli
from tests.cli.conftest import ROOT, TINY_GLOW


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("flowkit: error:")]


def run_main(capsys, *args) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def test_print_config_shows_the_effective_settings_and_touches_nothing(tmp_path, capsys):
    output = tmp_path / "run"
    status, out, err = run_main(
        capsys,
        "train",
        *TINY_GLOW,
        "--output",
        output,
        "--max-minutes",
        "1.5",
        "--set",
        "train.temperatures=0.5",
        "--print-config",
    )
    assert status == 0, err
    settings = json.loads(out)
    assert settings["preset"] == "glow-small" and settings["model_name"] == "glow"
    assert settings["model"]["K"] == 1 and settings["model"]["hidden_channels"] == 8
    assert settings["train"]["max_minutes"] == 1.5 and settings["train"]["max_steps"] == 2
    # A single number where a list is expected is a one-element list.
    assert settings["train"]["temperatures"] == [0.5]
    assert not output.exists()


def test_a_finished_run_is_kept_unless_resumed_or_overwritten(glow_run, capsys):
    checkpoint = (glow_run / "checkpoint.pt").read_bytes()
    status, _, err = run_main(capsys, "train", *TINY_GLOW, "--output", glow_run)
    assert status == 1
    [line] = error_lines(err)
    assert str(glow_run) in line and "--resume" in line and "--overwrite" in line
    assert (glow_run / "checkpoint.pt").read_bytes() == checkpoint


@pytest.mark.skipif(sys.platform == "win32", reason="run directories are locked with fcntl")
def test_a_run_directory_takes_one_process_at_a_time(glow_run, capsys):
    import fcntl

    handle = os.open(glow_run / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        status, _, err = run_main(capsys, "train", *TINY_GLOW, "--output", glow_run, "--resume")
    finally:
        os.close(handle)
    assert status == 1
    [line] = error_lines(err)
    assert str(os.getpid()) in line


def test_overwrite_replaces_a_run(tmp_path, capsys):
    output = tmp_path / "run"
    for flags in ([], ["--overwrite"]):
        status, out, err = run_main(capsys, "train", *TINY_GLOW, "--output", output, *flags)
        assert status == 0, err
        assert "trained 2 steps" in out
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert max(record["step"] for record in metrics) == 2


def test_a_diverging_run_stops_with_one_error_line(tmp_path, capsys):
    status, _, err = run_main(
        capsys,
        "train",
        *TINY_GLOW,
        "--output",
        tmp_path / "run",
        "--lr",
        "1e30",
        "--set",
        "train.max_nonfinite=1",
        "--set",
        "train.warmup_epochs=0",
    )
    assert status == 1
    [line] = error_lines(err)
    assert "non-finite" in line
    assert all(line.startswith("flowkit: ") for line in err.splitlines() if line.strip())


def test_image_folders_without_a_test_split_take_test_data(tmp_path, capsys):
    from PIL import Image

    for name, count in (("train", 64), ("test", 16)):
        (tmp_path / name).mkdir()
        for index in range(count):
            Image.new("L", (28, 28), color=(7 * index) % 256).save(tmp_path / name / f"{index}.png")
    status, _, err = run_main(
        capsys,
        "train",
        *TINY_GLOW,
        "--data",
        tmp_path / "train",
        "--output",
        tmp_path / "run",
        "--set",
        "train.num_train=64",
        "--set",
        "model.input_shape=[3, 28, 28]",
        "--max-steps",
        "1",
    )
    assert status == 2 and "--test-data" in err
    status, out, err = run_main(
        capsys,
        "train",
        *TINY_GLOW,
        "--data",
        tmp_path / "train",
        "--test-data",
        tmp_path / "test",
        "--output",
        tmp_path / "run",
        "--set",
        "train.num_train=64",
        "--set",
        "model.input_shape=[3, 28, 28]",
        "--max-steps",
        "1",
    )
    assert status == 0, err
    status, out, err = run_main(capsys, "eval", tmp_path / "run" / "checkpoint.pt", "--json")
    assert status == 0, err
    assert json.loads(out)["examples"] == 16


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_continue(tmp_path):
    output = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "flowkit", "train", *TINY_GLOW, "--output", str(output)]
    # Many epochs and a small learning rate: the run is still going when the signal comes.
    command += ["--max-steps", "100000", "--epochs", "100000", "--lr", "1e-5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (output / "checkpoint.pt").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = err.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("flowkit: warning: ")]
    assert process.returncode == 130, text
    assert len(lines) == 1 and "Traceback" not in text
    assert lines[0].startswith("flowkit: interrupted at step ")
    assert lines[0].endswith("; continue with --resume")
    assert Path(output / "checkpoint.pt").is_file()


def test_settings_the_data_rules_out_are_usage_errors(tmp_path, capsys):
    args = ["train", *TINY_GLOW, "--set", "train.batch_size=512", "--output", tmp_path / "run"]
    status, _, err = run_main(capsys, *args, "--print-config")
    assert status == 0, err
    status, _, err = run_main(capsys, *args)
    assert status == 2 and not (tmp_path / "run" / "checkpoint.pt").exists()
    [line] = error_lines(err)
    assert "512" in line and "128" in line


@pytest.mark.parametrize(
    ("flags", "shift", "flip"),
    [
        ([], 0.1, False),
        (["--no-augment"], 0.0, False),
        (["--augment-shift", "0.25", "--augment-flip"], 0.25, True),
    ],
)
def test_augmentation_follows_the_preset_unless_told(capsys, flags, shift, flip):
    status, out, err = run_main(
        capsys, "train", "--preset", "glow-cifar10", *flags, "--print-config"
    )
    assert status == 0, err
    train = json.loads(out)["train"]
    assert (train["augment_shift"], train["augment_flip"]) == (shift, flip)


def test_contradicting_augmentation_flags_are_a_usage_error(capsys):
    status, _, err = run_main(
        capsys, "train", "--preset", "glow-cifar10", "--no-augment", "--augment-flip"
    )
    assert status == 2
    [line] = error_lines(err)
    assert "--no-augment" in line and "--augment-flip" in line


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_an_out_of_range_augment_shift_names_the_flag(capsys, value):
    status, _, err = run_main(
        capsys, "train", "--preset", "glow-cifar10", "--augment-shift", value, "--print-config"
    )
    assert status == 2
    [line] = error_lines(err)
    assert "--augment-shift" in line and value in line


# The test images the tiny runs evaluate (train.num_test=64).
EVAL_64 = ("--num-test", "64")


def _last_test_value(output: Path) -> float:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [r["test_bpd"] for r in records if "test_bpd" in r][-1]


def test_the_bits_are_the_models_and_an_earlier_runs_train_n_bits_resumes(tmp_path, capsys):
    import torch

    output = tmp_path / "run"
    status, _, err = run_main(capsys, "train", *TINY_GLOW, "--n-bits", "5", "--output", output)
    assert status == 0, err
    # The model's bits are recorded with the run's data, not as a train setting ...
    saved = json.loads((output / "config.json").read_text())
    assert saved["data"]["n_bits"] == 5 and "n_bits" not in saved["train"]
    # The trained weights are the flow's, saved as a plain flow's are (the same layout as ever).
    import flowkit
    from flowkit.distributions import Dequantized

    assert not isinstance(flowkit.load(output / "checkpoint.pt"), Dequantized)
    # ... and eval reads them back: its bits/dim are the run's own test value (at 8 bits the
    # bin constant alone would add 3 bits/dim).
    status, out, err = run_main(capsys, "eval", output / "checkpoint.pt", "--json", *EVAL_64)
    assert status == 0, err
    assert abs(json.loads(out)["bits_per_dim"] - _last_test_value(output)) < 1e-4

    # An earlier run kept the bits as train.n_bits in config.json and the checkpoint: it resumes
    # (from its config.json) with the same model.
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=False)
    checkpoint["train_config"]["n_bits"] = 5
    torch.save(checkpoint, output / "checkpoint.pt")
    saved["train"]["n_bits"] = 5
    (output / "config.json").write_text(json.dumps(saved))
    args = ["--config", output / "config.json", "--resume", "--max-steps", "3", "--no-progress"]
    status, _, err = run_main(capsys, "train", *args)
    assert status == 0, err
    resumed = json.loads((output / "config.json").read_text())
    assert resumed["data"]["n_bits"] == 5
    status, out, err = run_main(capsys, "eval", output / "checkpoint.pt", "--json", *EVAL_64)
    assert status == 0, err
    assert abs(json.loads(out)["bits_per_dim"] - _last_test_value(output)) < 1e-4
    # Asked for other bits, the run is a different run: refused, nothing lost.
    args = ["--config", output / "config.json", "--resume", "--n-bits", "6", "--max-steps", "4"]
    status, _, err = run_main(capsys, "train", *args)
    assert status == 1 and "n_bits" in err
