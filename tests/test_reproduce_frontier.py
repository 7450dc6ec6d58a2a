"""The frontier and dequantization experiments' --quick modes run end to end on synthetic data."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.common import read_records
from flowkit.presets.registry import build_model

MAX_FIGURE_BYTES = 300_000


def _rows(table: str, header: str) -> dict[str, list[str]]:
    """The cells of the Markdown table after ``header``, keyed by the first column."""
    rows = {}
    for line in table.split(header, 1)[1].splitlines():
        if line.startswith("| ") and not line.startswith("| model") and "---" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_frontier_quick_records_table_and_figures(tmp_path: Path) -> None:
    output, figures = tmp_path / "out", tmp_path / "figures"
    argv = [
        "frontier",
        "--quick",
        "--output",
        str(output),
        "--figures",
        str(figures),
        "--threads",
        "1",
        "--datasets",
        "fashion-mnist",
        "--fashion-mnist",
        "synthetic",
        "--seeds",
        "3,5",
        "--warmup-steps",
        "3",
    ]
    assert main(argv) == 0
    records = read_records(output / "frontier" / "records.jsonl")
    done = {(r["model"], r["seed"]): r for r in records if r.get("done")}
    assert list(done) == [(m, s) for s in (3, 5) for m in ("glow", "flowpp", "tarflow")]
    for (model, seed), record in done.items():
        # Each model's family has the model's name; the seed seeds its weights too.
        rebuilt = build_model(model, record["config"])
        assert sum(p.numel() for p in rebuilt.parameters()) == record["parameters"]
        assert record["config"]["seed"] == seed
        assert record["warmup_steps"] == 3 and record["warmup_epochs"] == 0.0
        # Rounded training seconds in the record: a relative tolerance.
        assert record["images_per_second"] == pytest.approx(
            record["step"] * 64 / record["train_seconds"], rel=1e-2
        )
        assert record["sample_images"] == 2 and record["sampling_seconds"] > 0
        # Only the first seed draws the grids.
        assert bool(record["sample_grids"]) == (seed == 3)
    glow = done["glow", 3]["parameters"]
    assert abs(done["flowpp", 3]["parameters"] - glow) <= 0.1 * glow
    assert abs(done["tarflow", 3]["parameters"] - glow) <= 0.1 * glow
    tarflow = done["tarflow", 3]["config"]
    assert tarflow["noise_std"] == 0.0 and tarflow["data_scale"] == 2.0

    table = (output / "frontier" / "frontier.md").read_text()
    assert "linear over 3 steps" in table
    rows = _rows(table, "### fashion-mnist")
    for model in ("glow", "flowpp", "tarflow"):
        runs = [done[model, seed] for seed in (3, 5)]
        finals = {
            (r["seed"], r["weights"]): r
            for r in records
            if r["model"] == model and r.get("final") and not r.get("done")
        }
        assert len(finals) == 4
        curve = [r for r in records if r["model"] == model and r.get("weights") == "raw"]
        assert len(curve) == 4 and all(math.isfinite(r["bpd"]) for r in curve)
        cells = rows[model]
        assert cells[:3] == [
            str(runs[0]["parameters"]),
            f"{runs[0]['parameters'] / glow:.3f}",
            "2",
        ]
        assert float(cells[3]) == pytest.approx(statistics.fmean(r["step"] for r in runs), abs=0.5)
        speed = statistics.fmean(r["images_per_second"] for r in runs)
        assert float(cells[4]) == pytest.approx(speed, abs=0.05)
        sampling = statistics.fmean(r["sampling_seconds"] for r in runs)
        assert float(cells[5]) == pytest.approx(sampling, abs=5e-4)
        scores = [("raw", "bpd"), ("raw", "iw_bpd"), ("averaged", "bpd"), ("averaged", "iw_bpd")]
        for cell, (weights, key) in zip(cells[6:], scores):
            values = [finals[seed, weights][key] for seed in (3, 5)]
            mean, se = (float(v) for v in cell.split(" +- "))
            assert math.isclose(mean, statistics.fmean(values), abs_tol=1e-4)
            assert math.isclose(se, statistics.stdev(values) / math.sqrt(2), abs_tol=1e-4)

    names = ["frontier-fashion-mnist.png"] + [
        f"frontier-fashion-mnist-{m}-t{t}.png"
        for m in ("glow", "flowpp", "tarflow")
        for t in ("1", "0.7")
    ]
    for name in names:
        path = figures / name
        assert 0 < path.stat().st_size < MAX_FIGURE_BYTES, name
        with Image.open(path) as image:
            image.verify()

    # A second run finds every run of the same protocol finished and trains nothing; another
    # warm-up is another protocol, and the runs are trained again.
    assert main(argv) == 0
    assert read_records(output / "frontier" / "records.jsonl") == records
    assert main([*argv[:-1], "0"]) == 0
    again = [r for r in read_records(output / "frontier" / "records.jsonl") if r.get("done")]
    assert len(again) == 6 and all(r["warmup_steps"] == 0 for r in again)
    assert (
        "warm-up, the same for every model: none"
        in (output / "frontier" / "frontier.md").read_text()
    )


def test_dequantization_quick_table_follows_records(tmp_path: Path) -> None:
    output = tmp_path / "out"
    argv = ["dequantization", "--quick", "--output", str(output), "--fashion-mnist", "synthetic"]
    assert main([*argv, "--seeds", "0,1"]) == 0
    records = read_records(output / "dequantization" / "records.jsonl")
    assert sorted((r["variant"], r["seed"]) for r in records) == [
        ("uniform", 0),
        ("uniform", 1),
        ("variational", 0),
        ("variational", 1),
    ]
    table = (output / "dequantization" / "dequantization.md").read_text()
    rows = _rows(table, "|---|")
    params = {r["variant"]: r["parameters"] for r in records}
    assert params["uniform"] < params["variational"]
    for variant in ("variational", "uniform"):
        mine = [r for r in records if r["variant"] == variant]
        cells = rows[variant]
        assert cells[0] == str(params[variant]) and cells[1] == "2"
        for cell, key in zip(cells[2:], ("bpd", "iw_bpd")):
            values = [r[key] for r in mine]
            mean, se = (float(v) for v in cell.split(" +- "))
            assert math.isclose(mean, statistics.fmean(values), abs_tol=1e-4)
            assert math.isclose(se, statistics.stdev(values) / math.sqrt(2), abs_tol=1e-4)

    # A second run finds both variants finished at every seed and trains nothing.
    assert main([*argv, "--seeds", "0,1"]) == 0
    assert read_records(output / "dequantization" / "records.jsonl") == records
