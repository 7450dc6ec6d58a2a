"""The frontier and dequantization experiments' --quick modes run end to end on synthetic data."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

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
    argv = ["--quick", "--output", str(output), "--figures", str(figures), "--threads", "1"]
    status = main(
        ["frontier", *argv, "--datasets", "fashion-mnist", "--fashion-mnist", "synthetic"]
    )
    assert status == 0
    records = read_records(output / "frontier" / "records.jsonl")
    done = {r["model"]: r for r in records if r.get("done")}
    assert list(done) == ["glow", "flowpp", "tarflow"]
    for model, record in done.items():
        # Each model's family has the model's name.
        rebuilt = build_model(model, record["config"])
        assert sum(p.numel() for p in rebuilt.parameters()) == record["parameters"]
    glow = done["glow"]["parameters"]
    assert abs(done["flowpp"]["parameters"] - glow) <= 0.1 * glow
    assert abs(done["tarflow"]["parameters"] - glow) <= 0.1 * glow
    assert done["tarflow"]["config"]["noise_std"] == 0.0

    table = (output / "frontier" / "frontier.md").read_text()
    rows = _rows(table, "### fashion-mnist")
    for model, record in done.items():
        finals = {
            r["weights"]: r
            for r in records
            if r["model"] == model and r.get("final") and not r.get("done")
        }
        assert set(finals) == {"raw", "averaged"}
        curve = [r for r in records if r["model"] == model and r.get("weights") == "raw"]
        assert len(curve) == 2 and all(math.isfinite(r["bpd"]) for r in curve)
        expected = [
            str(record["parameters"]),
            f"{record['parameters'] / glow:.3f}",
            str(record["step"]),
            f"{record['train_seconds']:.0f}",
            f"{finals['raw']['bpd']:.4f}",
            f"{finals['raw']['iw_bpd']:.4f}",
            f"{finals['averaged']['bpd']:.4f}",
            f"{finals['averaged']['iw_bpd']:.4f}",
        ]
        assert rows[model] == expected

    names = ["frontier-fashion-mnist.png"] + [
        f"frontier-fashion-mnist-{m}-t{t}.png" for m in done for t in ("1", "0.7")
    ]
    for name in names:
        path = figures / name
        assert 0 < path.stat().st_size < MAX_FIGURE_BYTES, name
        with Image.open(path) as image:
            image.verify()


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
