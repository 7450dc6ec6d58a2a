"""Tests of the families benchmark, on flowkit's models alone: the peers are not installed in CI."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import families
from benchmarks.families import Model, Split, best_test, load, train
from benchmarks.families_report import render


def small_split(seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(96, 2, generator=generator)
    return Split(rows[:64], rows[64:80], rows[80:], log_scale=0.5)


def record(model, pair, seed, history, steps=None):
    steps = history[-1][1] if steps is None else steps
    return {
        "data": "two-moons",
        "pair": pair,
        "model": model,
        "seed": seed,
        "parameters": 100,
        "steps": steps,
        "train_seconds": 1.0,
        "ms_per_step": 1000 / steps,
        "finite": True,
        "seconds_limit": 1.0,
        "steps_limit": None,
        "eval_seconds": 0.1,
        "history": history,
        "final": best_test(history),
    }


def test_the_split_is_fixed_standardised_and_80_10_10():
    first, again = load("two-moons"), load("two-moons")
    sizes = [len(part) for part in (first.train, first.validation, first.test)]
    assert sizes == [8000, 1000, 1000]
    assert torch.equal(first.test, again.test)
    assert torch.allclose(first.train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(first.train.std(0), torch.ones(2), atol=1e-5)
    assert first.train.dtype == torch.float32
    torus = load("torus")
    assert torus.log_scale == 0.0
    assert float(torus.train.abs().max()) <= math.pi


def test_a_run_records_its_evaluations_and_the_best_validation_reading():
    result = train(
        "two-moons",
        small_split(),
        "resflow",
        "flowkit resflow",
        0,
        seconds=None,
        steps=7,
        eval_seconds=None,
    )
    assert [entry[1] for entry in result["history"]] == [0, 1, 2, 5, 7]
    assert result["steps"] == 7 and result["finite"]
    assert result["ms_per_step"] == pytest.approx(1000 * result["train_seconds"] / 7, rel=1e-2)
    best = min(result["history"], key=lambda entry: entry[2])
    assert result["final"] == best[3]
    assert all(math.isfinite(value) for entry in result["history"] for value in entry[2:])
    json.dumps(result)


def test_evaluating_does_not_change_the_training(monkeypatch):
    # A model whose loss and evaluation both draw from torch's and numpy's global generators.
    def build(name, split, seed):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(2, 1)

        def loss(x):
            return (layer(x + torch.randn_like(x)) - float(np.random.rand())).pow(2).mean()

        def log_prob(x):
            noise = torch.randn(len(x)) + float(np.random.rand())
            return -(layer(x).squeeze(-1) - noise).pow(2)

        return Model(layer, loss, log_prob)

    monkeypatch.setattr(families, "build", build)

    def final_weight(eval_seconds):
        np.random.seed(0)
        result = train(
            "two-moons",
            small_split(),
            "naf",
            "flowkit naf",
            0,
            seconds=None,
            steps=6,
            eval_seconds=eval_seconds,
        )
        return result["history"]

    often, rarely = final_weight(1e-9), final_weight(None)
    # Every step evaluated against steps 0, 1, 2, 5 and the last.
    assert [entry[1] for entry in often] == list(range(7))
    assert [entry[1] for entry in rarely] == [0, 1, 2, 5, 6]
    assert often[-1][2:] == rarely[-1][2:]


def test_a_non_finite_loss_ends_the_run_before_its_update(monkeypatch):
    layer = torch.nn.Linear(2, 1)
    calls = []

    def loss(x):
        calls.append(1)
        value = layer(x).pow(2).mean()
        return value * math.nan if len(calls) == 3 else value

    def log_prob(x):
        return -layer(x).pow(2).squeeze(-1)

    monkeypatch.setattr(families, "build", lambda name, split, seed: Model(layer, loss, log_prob))
    result = train(
        "two-moons",
        small_split(),
        "naf",
        "flowkit naf",
        0,
        seconds=None,
        steps=10,
        eval_seconds=None,
    )
    assert result["steps"] == 2 and not result["finite"]
    assert torch.isfinite(layer.weight).all()
    assert result["history"][-1][1] == 2


def test_the_report_reads_equal_time_and_equal_steps():
    fast = [[0.0, 0, 3.0, 3.1], [0.2, 10, 2.0, 2.1], [0.4, 20, 1.5, 1.6], [0.9, 45, 1.0, 1.1]]
    slow = [[0.0, 0, 3.0, 3.2], [0.5, 10, 2.5, 2.6], [1.0, 17, 2.2, 2.3]]
    records = [
        record("flowkit naf", "naf", 0, fast),
        record("zuko NAF", "naf", 0, slow),
    ]
    table = render(records)
    cells = [line.split(" | ") for line in table.splitlines() if line.startswith("| naf")]
    rows = {row[1]: row for row in cells}
    # Equal time: each run's best validation; equal steps: both evaluated up to step 10.
    assert rows["flowkit naf"][5] == "1.100" and rows["flowkit naf"][7] == "10"
    assert rows["flowkit naf"][8] == "2.100"
    assert rows["zuko NAF"][5] == "2.300" and rows["zuko NAF"][8] == "2.600"


def test_ncsf_on_other_data_is_refused_on_one_line(capsys):
    assert families.main(["--data", "two-moons", "--pairs", "ncsf", "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("flowkit: error: pair 'ncsf'") and "torus" in error
    assert "\n" not in error
