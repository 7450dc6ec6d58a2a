"""benchmarks/tarflow_sampling.py's --quick mode: it times each way and the two agree."""

from __future__ import annotations

import json

import pytest

from benchmarks import tarflow_sampling


def test_quick_mode_times_the_cache_and_the_full_passes(capsys: pytest.CaptureFixture) -> None:
    tarflow_sampling.main(["--quick", "--guidance", "1.5"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["what"] for line in lines[:-1]] == ["cached", "full passes"]
    summary = lines[-1]
    assert summary["patches"] == 16 and summary["guidance"] == 1.5
    assert set(summary["median_seconds"]) == {"cached", "full passes"}
    assert summary["max_difference_cached_vs_full"] < 1e-5
    assert summary["full_over_cached"] > 0
