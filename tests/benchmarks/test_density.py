"""Tests of the density benchmark, on flowkit alone: the peers are not installed in CI."""

import dataclasses
import json
import math

import pytest
import torch

from benchmarks import density
from benchmarks.density import QUICK, build_density_plan
from benchmarks.density_measure import load_dataset, measure
from benchmarks.density_models import (
    build_density_model,
    default_architecture,
    matched_width,
    trainable_parameters,
)
from benchmarks.density_report import render_density


def finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def flowkit_spec(dataset, model, **fields):
    features = {"two-moons": 2, "eight-gaussians": 2, "mixture-10d": 10}[dataset]
    spec = {
        "dataset": dataset,
        "model": model,
        "library": "flowkit",
        "architecture": default_architecture(model, features).to_dict(),
        "train_size": 256,
        "test_size": 128,
        "batch": 32,
        "steps": 4,
        "warmup": 1,
        "learning_rate": 1e-3,
        "curve_points": 2,
        "data_seed": 0,
        "seed": 0,
        "threads": 1,
        "device": "cpu",
    }
    spec.update(fields)
    return spec


def parameters(module):
    return sum(p.numel() for p in module.parameters())


# --- models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["maf", "nsf", "nsf-ar"])
def test_the_default_architecture_builds_flowkits_preset(model):
    from flowkit.presets import maf, nsf

    preset = {
        "maf": lambda: maf(3),
        "nsf": lambda: nsf(3),
        "nsf-ar": lambda: nsf(3, autoregressive=True),
    }
    built = build_density_model("flowkit", default_architecture(model, 3)).module
    assert trainable_parameters(built) == parameters(preset[model]())
    assert str(built) == str(preset[model]())


def test_unknown_models_and_libraries_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="nsf-ar"):
        default_architecture("glow", 2)
    with pytest.raises(ValueError, match="zuko"):
        build_density_model("normflows", default_architecture("maf", 2))


def test_matched_width_finds_the_width_with_the_closest_count():
    arch = default_architecture("maf", 2)

    def count(width):
        model = build_density_model("flowkit", dataclasses.replace(arch, width=width))
        return parameters(model.module)

    assert matched_width("flowkit", arch, count(40)) == (40, count(40))
    # A quarter of the way from width 40's count to width 41's, width 40 is the closer.
    between = count(40) + (count(41) - count(40)) // 4
    assert matched_width("flowkit", arch, between) == (40, count(40))
    between = count(41) - (count(41) - count(40)) // 4
    assert matched_width("flowkit", arch, between) == (41, count(41))


# --- one measurement, in this process ------------------------------------------------------------
def test_an_untrained_identity_flow_scores_the_standardising_gaussian():
    # flowkit's NSF preset starts as the identity (its MAF preset starts random), and a zero
    # learning rate keeps it there, so the model is N(0, I) on standardised data: in original
    # units, the Gaussian with the training set's mean and standard deviation. This checks the
    # data and the log-determinant correction.
    spec = flowkit_spec("mixture-10d", "nsf", learning_rate=0.0)
    result = measure(spec)["result"]
    train, test, _ = load_dataset(spec)
    gaussian = torch.distributions.Normal(train.double().mean(0), train.double().std(0))
    expected = gaussian.log_prob(test.double()).sum(-1).mean()
    assert result["test_log_likelihood"] == pytest.approx(float(expected), abs=1e-4)
    assert result["true_test_log_likelihood"] > result["test_log_likelihood"]


def test_a_measurement_record_is_complete_and_finite():
    record = measure(flowkit_spec("eight-gaussians", "nsf"))
    result = record["result"]
    assert record["ok"] and record["environment"]["threads"] == 1
    assert result["parameters"] == result["target_parameters"] and result["parameter_ratio"] == 1
    assert result["steps_done"] == 4 and result["timed_steps"] == 3
    assert result["loss_finite"] and result["first_non_finite_step"] is None
    for key in (
        "median_step_seconds",
        "train_seconds",
        "final_loss",
        "test_log_likelihood",
        "test_log_likelihood_stderr",
        "true_test_log_likelihood",
    ):
        assert finite(result[key]), key
    assert result["median_step_seconds"] > 0
    assert [step for step, _ in result["loss_curve"]] == [0, 2]
    # Eight Gaussians of std 0.2 around a circle: about 1.7 nats below log(1 / (2 pi 0.04)).
    assert -2.0 < result["true_test_log_likelihood"] < -1.5


# --- plan -----------------------------------------------------------------------------------------
def test_plan_puts_libraries_side_by_side_on_equal_settings():
    plan = build_density_plan(
        datasets=["two-moons", "mixture-10d"],
        models=["maf", "nsf"],
        libraries=["flowkit", "zuko", "nflows"],
        sizes=QUICK,
        seeds=[0, 1],
        data_seed=7,
        threads=1,
        device="cpu",
    )
    assert len(plan) == 2 * 2 * 2 * 3
    assert [s["library"] for s in plan[:3]] == ["flowkit", "zuko", "nflows"]
    shared = {"batch", "steps", "learning_rate", "train_size", "test_size", "data_seed", "threads"}
    for spec in plan:
        assert {k: spec[k] for k in shared} == {k: plan[0][k] for k in shared}
        assert spec["architecture"]["features"] == (10 if spec["dataset"] == "mixture-10d" else 2)
    assert {s["seed"] for s in plan} == {0, 1} and plan[0]["data_seed"] == 7
    with pytest.raises(ValueError, match="two-moons"):
        build_density_plan(
            datasets=["moons"],
            models=["maf"],
            libraries=["flowkit"],
            sizes=QUICK,
            seeds=[0],
            data_seed=0,
            threads=1,
            device="cpu",
        )


# --- report ---------------------------------------------------------------------------------------
def fake_record(library, seed, ll, seconds, **result):
    full = {
        "width": 64,
        "parameters": 1000,
        "target_parameters": 1000,
        "parameter_ratio": 1.0,
        "test_log_likelihood": ll,
        "test_log_likelihood_stderr": 0.01,
        "true_test_log_likelihood": -10.0,
        "median_step_seconds": seconds,
        "loss_finite": True,
        "first_non_finite_step": None,
        "train_fingerprint": [1.0, 2.0],
        "test_fingerprint": [3.0, 4.0],
    }
    full.update(result)
    spec = {"dataset": "mixture-10d", "model": "maf", "library": library, "seed": seed}
    environment = {"torch": "2.x", "threads": 1, "device": "cpu", "libraries": {"flowkit": "0.1"}}
    return {"ok": True, "spec": spec, "environment": environment, "result": full}


def rows_of(text):
    return [
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_report_compares_seed_means_and_median_times():
    records = [
        fake_record("flowkit", 0, -11.0, 0.002),
        fake_record("flowkit", 1, -11.2, 0.004),
        fake_record("zuko", 0, -11.5, 0.004),
        fake_record("zuko", 1, -11.5, 0.008),
        fake_record("nflows", 0, -12.0, 0.001, loss_finite=False, first_non_finite_step=17),
        fake_record("nflows", 1, -12.0, 0.001, parameters=1100, parameter_ratio=1.1),
        {"ok": False, "spec": {"dataset": "mixture-10d", "library": "zuko"}, "error": "Boom"},
    ]
    text = render_density(
        records,
        datasets=["mixture-10d"],
        models=["maf"],
        libraries=["flowkit", "zuko", "nflows"],
        settings={"steps": 10},
        command="python -m benchmarks.density",
        root=".",
        notes=["zuko is not installed"],
    )
    rows = rows_of(text)
    # flowkit: mean -11.1 over seeds, s.d. 0.141; median of 2 and 4 ms; 0.9 nats below true.
    assert (
        "mixture-10d",
        "maf",
        "flowkit",
        "64",
        "1,000",
        "100.0%",
        "-11.10 ± 0.14",
        "-1.10",
        "3.00",
        "yes",
    ) in rows
    assert rows[-1] == (
        "mixture-10d",
        "maf",
        "-10.00",
        "-11.10",
        "+0.400",
        "+0.900",
        "0.500",
        "3.00",
    )
    assert "s.d. over 2 seeds" in text and "Note: zuko is not installed" in text
    assert "- dataset=mixture-10d, library=zuko: Boom" in text
    assert "library=nflows, seed=0: non-finite training loss at step 17" in text
    assert "library=nflows, seed=1: 1,100 parameters against flowkit's 1,000" in text
    assert "other data" not in text
    moved = fake_record("zuko", 2, -11.5, 0.004, test_fingerprint=[3.0, 5.0])
    assert "trained or tested on other data than flowkit" in render_density(
        records + [moved],
        datasets=["mixture-10d"],
        models=["maf"],
        libraries=["flowkit"],
        settings={},
        command="c",
        root=".",
        notes=[],
    )


# --- the whole quick path, with the peers missing ------------------------------------------------
@pytest.mark.slow
def test_quick_run_measures_flowkit_and_skips_missing_peers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(density, "library_available", lambda name: False)
    results, markdown = tmp_path / "records.json", tmp_path / "BENCHMARKS.md"
    code = density.main(["--quick", "--json", str(results), "--output", str(markdown)])
    out = capsys.readouterr().out
    assert code == 0
    for peer in ("zuko", "nflows"):
        assert f"{peer} is not installed, so the peer is skipped" in out
    records = json.loads(results.read_text())
    measured = {(r["spec"]["dataset"], r["spec"]["model"]) for r in records}
    assert measured == {(d, m) for d in density.QUICK_DATASETS for m in density.QUICK_MODELS}
    for record in records:
        assert record["ok"], record
        assert record["spec"]["library"] == "flowkit"
        assert record["spec"]["steps"] == QUICK.steps
        result = record["result"]
        assert result["loss_finite"] and result["timed_steps"] == QUICK.steps - QUICK.warmup
        assert finite(result["test_log_likelihood"]) and result["median_step_seconds"] > 0
    mixture = [r for r in records if r["spec"]["dataset"] == "mixture-10d"]
    assert all(finite(r["result"]["true_test_log_likelihood"]) for r in mixture)
    written = markdown.read_text()
    assert written.startswith("# Benchmarks")
    assert "Command: `python -m benchmarks.density --quick" in written
    assert "| two-moons | maf | flowkit | 64 |" in written and "flowkit against" not in written
