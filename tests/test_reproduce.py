"""The reproduction experiments' --quick modes run end to end on small files the test writes."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import statistics
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.common import ROOT
from benchmarks.reproduce.common import prepare_dataset, read_records
from benchmarks.reproduce.time_to_quality import time_to_reach

# The documentation's figures must stay small.
MAX_FIGURE_BYTES = 300_000


def _write_idx(path: Path, array: np.ndarray) -> None:
    kind = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fashion_mnist(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, count in (("train", 96), ("t10k", 48)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 256, (count, 28, 28))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def _cifar_tar(path: Path) -> Path:
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tar:
        for split, per_class in (("train", 2), ("test", 1)):
            for label in range(10):
                for index in range(per_class):
                    pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/class{label}/{index:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
    return path


def test_cifar_archive_is_cached_with_labels(tmp_path: Path) -> None:
    import torch

    cache, described = prepare_dataset(
        "cifar10", _cifar_tar(tmp_path / "cifar.tar.gz"), tmp_path / "data", quick=True
    )
    saved = torch.load(cache, weights_only=True)
    assert saved["train_images"].shape == (20, 3, 32, 32)
    assert saved["test_images"].shape == (10, 3, 32, 32)
    assert sorted(saved["train_labels"].tolist()) == sorted(list(range(10)) * 2)
    assert str(tmp_path) in described


def test_time_to_reach_interpolates_the_first_crossing() -> None:
    rng = random.Random(0)
    for _ in range(50):
        times = sorted(rng.uniform(0, 100) for _ in range(6))
        values = [rng.uniform(3, 5) for _ in times]
        target = rng.uniform(3, 5)
        reached = time_to_reach(list(zip(times, values)), target)
        below = [i for i, v in enumerate(values) if v <= target]
        if not below:
            assert reached is None
            continue
        first = below[0]
        if first == 0:
            assert reached == times[0]
            continue
        assert times[first - 1] <= reached <= times[first]
        # The crossing lies on the straight line between the two evaluations around it.
        t0, t1, v0, v1 = times[first - 1], times[first], values[first - 1], values[first]
        assert math.isclose(v0 + (reached - t0) / (t1 - t0) * (v1 - v0), target, abs_tol=1e-9)


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    section = text.split(header, 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| variant"):
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_all_quick_writes_records_tables_and_figures(tmp_path: Path) -> None:
    output, figures = tmp_path / "out", tmp_path / "figures"
    fashion = _fashion_mnist(tmp_path / "fashion")
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [
        sys.executable,
        "-m",
        "benchmarks.reproduce",
        "all",
        "--quick",
        "--output",
        str(output),
        "--figures",
        str(figures),
        "--fashion-mnist",
        str(fashion),
        "--cifar10",
        "synthetic",
        "--datasets",
        "fashion-mnist",
        "--seeds",
        "0,1",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    # Ablation: six variants, two seeds, and a table whose numbers follow from the records.
    records = read_records(output / "ablation" / "records.jsonl")
    finals = {}
    last = max(r["step"] for r in records)
    for r in records:
        assert math.isfinite(r["test_bpd"]) and r["train_seconds"] >= 0
        if r["step"] == last:
            finals.setdefault(r["variant"], []).append(r["test_bpd"])
    assert len(finals) == 6 and all(len(v) == 2 for v in finals.values())
    table = (output / "ablation" / "ablation.md").read_text()
    rows = _table_rows(table, "### fashion-mnist")
    for variant, values in finals.items():
        mean, se = rows[variant][0].split(" +- ")
        assert math.isclose(float(mean), statistics.fmean(values), abs_tol=1e-4)
        assert math.isclose(float(se), statistics.stdev(values) / math.sqrt(2), abs_tol=1e-4)
    ordering = sorted(finals, key=lambda v: statistics.fmean(finals[v]))
    assert "Ordering (best first): " + " < ".join(ordering) in table

    # A second run finds every run finished and trains nothing.
    again = subprocess.run(
        [*command[:3], "ablation", *command[4:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "0 runs" in again.stderr
    assert read_records(output / "ablation" / "records.jsonl") == records

    # Samples: a record per temperature plus the real images, and the table shows them.
    samples = read_records(output / "samples" / "records.jsonl")
    assert [r["temperature"] for r in samples][:-1] == [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    sample_table = (output / "samples" / "samples.md").read_text()
    for r in samples:
        assert f"{r['evaluator_bpd']:.4f}" in sample_table and 0 <= r["pixel_std"] <= 1

    # Time to quality: both libraries finished, the ratio follows from the curves.
    timing = read_records(output / "time-to-quality" / "records.jsonl")
    assert {r["library"] for r in timing if r.get("done")} == {"normflows", "flowkit"}
    summary = json.loads((output / "time-to-quality" / "summary.json").read_text())
    curves = {
        c: [(r["train_seconds"], r["test_bpd"]) for r in timing if r.get("curve") == c]
        for c in ("normflows", "flowkit-averaged", "flowkit-raw")
    }
    budget, target = max(curves["normflows"])
    for curve in ("flowkit-averaged", "flowkit-raw"):
        reached = time_to_reach(curves[curve], target)
        assert summary[curve] == (None if reached is None else reached / budget)

    names = [
        "ablation-fashion-mnist.png",
        "temperature-fashion-mnist.png",
        "time-to-quality.png",
        *(
            f"samples-fashion-mnist-{kind}.png"
            for kind in ("temperatures", "classes", "interpolation", "manipulation")
        ),
    ]
    for name in names:
        path = figures / name
        assert 0 < path.stat().st_size < MAX_FIGURE_BYTES, name
        with Image.open(path) as image:
            image.verify()


@pytest.mark.parametrize("argv", [["ablation", "--quick", "--datasets", "mnist"]])
def test_unknown_dataset_is_refused(argv: list[str], tmp_path: Path) -> None:
    from benchmarks.reproduce.__main__ import main

    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        main([*argv, "--output", str(tmp_path)])
