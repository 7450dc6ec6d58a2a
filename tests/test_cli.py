import json
import math

import pytest
import torch

from flowkit.cli import build_parser, main

TINY = [
    "--set",
    "model.K=1",
    "--set",
    "model.hidden_channels=8",
    "--set",
    "train.num_train=128",
    "--set",
    "train.num_test=64",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.init_batch_size=64",
    "--set",
    "train.num_samples=8",
    "--set",
    "train.temperatures=[0.0, 0.7]",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    code = main(
        [
            "train",
            "--preset",
            "glow-small",
            "--output",
            str(output),
            "--epochs",
            "1",
            "--no-progress",
            "--device",
            "cpu",
            *TINY,
        ]
    )
    assert code == 0
    return output


def test_train_writes_the_promised_files(trained):
    for name in ("checkpoint.pt", "metrics.jsonl", "bpd.png"):
        assert (trained / name).is_file(), name
    assert (trained / "samples" / "epoch0001_t0.70.png").is_file()


def eval_bpd(checkpoint, capsys, *extra):
    assert main(["eval", str(checkpoint), "--num-test", "64", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bits_per_dim"]


def test_eval_agrees_across_batch_sizes_precision_and_direct_log_prob(trained, capsys):
    from flowkit import load_flow
    from flowkit.data import load_dataset, to_model_input
    from flowkit.train.data import EVAL_SEED

    checkpoint = trained / "checkpoint.pt"
    a = eval_bpd(checkpoint, capsys, "--batch-size", "64")
    b = eval_bpd(checkpoint, capsys, "--batch-size", "7")
    c = eval_bpd(checkpoint, capsys, "--batch-size", "64", "--dtype", "float64")
    assert abs(a - b) < 1e-4 and abs(a - c) < 1e-4
    # Direct computation with Flow.log_prob in float64 on the same dequantised images.
    flow, _ = load_flow(checkpoint)
    images = load_dataset("fashion-mnist-small", split="test").images[:64]
    x = to_model_input(images, 8, generator=torch.Generator().manual_seed(EVAL_SEED))
    with torch.no_grad():
        log_density = flow.double().log_prob(x.double())
        direct = ((-log_density + 784 * 8 * math.log(2)) / (784 * math.log(2))).mean().item()
    assert abs(direct - c) < 1e-4


def test_sample_interpolate_manipulate(trained, tmp_path, capsys):
    checkpoint = str(trained / "checkpoint.pt")
    assert (
        main(
            [
                "sample",
                checkpoint,
                "--temperatures",
                "0",
                "0.7",
                "--num",
                "4",
                "--output",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "samples_t0.00.png").is_file()
    assert (
        main(
            [
                "interpolate",
                checkpoint,
                "--first",
                "0",
                "2",
                "--second",
                "1",
                "3",
                "--steps",
                "4",
                "--output",
                str(tmp_path / "i.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "i.png").is_file()
    assert (
        main(
            [
                "manipulate",
                checkpoint,
                "--attribute",
                "1",
                "--indices",
                "0",
                "--num-reference",
                "64",
                "--output",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.png").is_file()


@pytest.mark.parametrize(
    "command", ["train", "eval", "sample", "interpolate", "manipulate", "presets"]
)
def test_every_command_documents_every_option(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.help is argparse_suppress():
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def test_config_file_and_overrides_merge_in_order(tmp_path):
    from flowkit.cli import resolve_configs

    config = tmp_path / "run.json"
    config.write_text(
        json.dumps({"preset": "glow-small", "model": {"K": 3}, "train": {"lr": 0.01}})
    )
    args = build_parser().parse_args(
        ["train", "--config", str(config), "--lr", "0.02", "--set", "model.K=5"]
    )
    model, train = resolve_configs(args)
    assert (model.K, model.L, train.lr, train.data) == (5, 2, 0.02, "fashion-mnist-small")
