"""flowkit train --preset cnf on a table, by maximum likelihood and by flow matching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import flowkit
from flowkit import cli
from tests.cli.test_tables import read_csv, ring, write_csv

# A narrow field on a fixed-step solver, a few steps: the run, not the fit, is under test.
TINY_CNF = [
    "--preset",
    "cnf",
    "--set",
    "model.hidden_features=8",
    "--set",
    "model.method=rk4",
    "--set",
    "model.step_size=0.25",
    "--batch-size",
    "32",
    "--max-steps",
    "6",
    "--set",
    "train.log_every=2",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.mark.parametrize("objective", ["likelihood", "flow_matching"])
def test_train_eval_sample_load(tmp_path, capsys, objective):
    data = write_csv(tmp_path / "train.csv", ["a", "b"], ring(200, seed=0))
    output = tmp_path / "run"
    status = cli.main(
        [
            "train",
            *TINY_CNF,
            "--set",
            f"model.objective={objective}",
            "--set",
            "model.kinetic_weight=" + ("0.01" if objective == "likelihood" else "0"),
            "--data",
            str(data),
            "--test-fraction",
            "0.2",
            "--output",
            str(output),
        ]
    )
    assert status == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    logged = "flow_matching" if objective == "flow_matching" else "kinetic_energy"
    assert any(logged in record for record in records), records
    best_test = [r["best_test_nll"] for r in records if "best_test_nll" in r][-1]
    capsys.readouterr()

    # eval reports the exact ODE likelihood of the held-out rows under the best weights, as the
    # run did.
    assert cli.main(["eval", str(output / "checkpoint.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nll"] == pytest.approx(best_test, abs=1e-4)

    # The model reloads in the data's units with its training objective, and samples rows.
    flow = flowkit.load(output / "checkpoint.pt")
    rows = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.isfinite(flow.log_prob(rows)).all()
    replaced = flow.training_loss(rows, None)
    assert replaced is not None and logged in replaced.metrics
    target = tmp_path / "samples.csv"
    args = ["sample", str(output / "checkpoint.pt"), "--num", "7", "--output", str(target)]
    assert cli.main(args) == 0
    columns, values = read_csv(target)
    assert columns == ["a", "b"] and values.shape == (7, 2) and np.isfinite(values).all()


def test_flow_matching_refuses_penalties_in_one_line(tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", ["a", "b"], ring(100, seed=0))
    args = ["train", *TINY_CNF, "--data", str(data), "--test-fraction", "0.2"]
    args += ["--set", "model.objective=flow_matching", "--set", "model.jacobian_weight=0.1"]
    status = cli.main([*args, "--output", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status in (1, 2) and len(lines) == 1 and lines[0].startswith("flowkit: error:")
    assert "flow matching solves none" in lines[0]


def test_train_with_ot_coupling_records_it(tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", ["a", "b"], ring(100, seed=0))
    output = tmp_path / "run"
    args = ["train", *TINY_CNF, "--data", str(data), "--test-fraction", "0.2"]
    args += ["--set", "model.objective=flow_matching", "--set", "model.coupling=ot"]
    assert cli.main([*args, "--output", str(output)]) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(record.get("flow_matching", np.nan)) for record in records), records
    assert json.loads((output / "config.json").read_text())["model"]["coupling"] == "ot"


def test_ot_coupling_with_the_likelihood_is_refused_in_one_line(tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", ["a", "b"], ring(100, seed=0))
    args = ["train", *TINY_CNF, "--data", str(data), "--test-fraction", "0.2"]
    status = cli.main([*args, "--set", "model.coupling=ot", "--output", str(tmp_path / "o")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status in (1, 2) and len(lines) == 1 and lines[0].startswith("flowkit: error:")
    assert "objective='flow_matching'" in lines[0]
