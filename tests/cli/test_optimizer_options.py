"""``flowkit train``'s optimizer and schedule options reach TrainConfig; bad ones are one line."""

from __future__ import annotations

import json

import pytest

from flowkit import cli


def effective_train(capsys, *args: str) -> dict:
    assert cli.main(["train", *args, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)["train"]


def error_line(capsys, *args: str) -> str:
    assert cli.main(["train", *args, "--print-config"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowkit: error: "), lines
    return lines[0]


def test_the_options_set_the_optimizer_and_the_schedule(capsys):
    train = effective_train(
        capsys,
        *("--preset", "glow-small", "--optimizer", "adamw", "--beta2", "0.95"),
        *("--weight-decay", "0.0001", "--warmup-steps", "200", "--lr-decay", "linear"),
        *("--min-lr-ratio", "0.05"),
    )
    assert {key: train[key] for key in ("optimizer", "beta2", "weight_decay")} == {
        "optimizer": "adamw",
        "beta2": 0.95,
        "weight_decay": 0.0001,
    }
    # The warm-up in steps replaces the preset's half epoch.
    assert (train["warmup_steps"], train["warmup_epochs"]) == (200, 0.0)
    assert (train["lr_decay"], train["min_lr_ratio"]) == ("linear", 0.05)


def test_a_warm_up_in_epochs_replaces_the_config_files_in_steps(capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "glow-small", "train": {"warmup_steps": 100}}))
    assert effective_train(capsys, "--config", str(config))["warmup_steps"] == 100
    train = effective_train(capsys, "--config", str(config), "--set", "train.warmup_epochs=2")
    assert (train["warmup_steps"], train["warmup_epochs"]) == (None, 2)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--weight-decay", "0.01"], "weight_decay=0.01 with optimizer 'adamax'"),
        (["--optimizer", "adam", "--weight-decay", "0.01"], "use optimizer 'adamw'"),
        (["--optimizer", "sgd"], "--optimizer (train.optimizer)"),
        (["--lr-decay", "step"], "--lr-decay (train.lr_decay)"),
        (["--min-lr-ratio", "2"], "--min-lr-ratio (train.min_lr_ratio) expects"),
        (["--beta2", "1"], "--beta2 (train.beta2) expects"),
        (["--warmup-steps", "-1"], "--warmup-steps (train.warmup_steps) expects"),
        (
            ["--warmup-steps", "10", "--set", "train.warmup_epochs=1"],
            "warmup_epochs or warmup_steps, got both",
        ),
    ],
    ids=["decay-adamax", "decay-adam", "optimizer", "lr-decay", "ratio", "beta2", "warmup", "both"],
)
def test_bad_optimizer_settings_are_one_error_line(capsys, args, expected):
    assert expected in error_line(capsys, "--preset", "glow-small", *args)


def test_precision_accumulation_and_compile_options_reach_the_train_settings(capsys, tmp_path):
    train = effective_train(capsys, "--preset", "glow-small")
    assert (train["precision"], train["grad_accumulation"], train["compile"]) == (
        "float32",
        1,
        False,
    )
    train = effective_train(
        capsys,
        *("--preset", "glow-small", "--precision", "bfloat16", "--grad-accumulation", "4"),
        "--compile",
    )
    assert (train["precision"], train["grad_accumulation"], train["compile"]) == (
        "bfloat16",
        4,
        True,
    )
    # The same values from a config file, as users keep them.
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"preset": "glow-small", "train": {"precision": "float16", "compile": True}})
    )
    train = effective_train(capsys, "--config", str(config))
    assert (train["precision"], train["compile"]) == ("float16", True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--precision", "half"], "(train.precision): TrainConfig expects precision in"),
        (["--grad-accumulation", "0"], "--grad-accumulation (train.grad_accumulation)"),
        (["--set", "train.compile=yes"], "--compile (train.compile) expects true or false"),
    ],
    ids=["precision", "accumulation", "compile"],
)
def test_bad_compute_settings_are_one_error_line(capsys, args, expected):
    assert expected in error_line(capsys, "--preset", "glow-small", *args)
