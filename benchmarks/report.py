"""Tables of a benchmark run with flowkit/normflows ratios, as Markdown (stdout, BENCHMARKS.md).

Every number printed comes from a record of the same run; a missing or failed measurement prints
as ``-`` (and failures are listed with their error), never as an estimate.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Records", "device_description", "git_commit", "render"]

MISSING = "-"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class Records:
    """The successful records of a run, looked up by what they measured."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.ok = [r for r in records if r.get("ok")]
        self.failed = [r for r in records if not r.get("ok")]

    def find(self, measure: str, **where: Any) -> dict[str, Any] | None:
        """The first record of ``measure`` whose spec matches ``where`` (``K`` reads the config)."""
        for record in self.ok:
            spec = record["spec"]
            if spec["measure"] != measure:
                continue
            if all(
                (spec.get("config", {}).get("K") if key == "K" else spec.get(key)) == value
                for key, value in where.items()
            ):
                return record
        return None

    def values(self, key: str, measure: str | None = None) -> list[Any]:
        """Distinct values of spec field ``key`` in order of appearance."""
        seen: list[Any] = []
        for record in self.ok:
            if measure is not None and record["spec"]["measure"] != measure:
                continue
            value = record["spec"].get(key)
            if value is not None and value not in seen:
                seen.append(value)
        return seen

    def train_batches(self, config: str) -> list[int]:
        return sorted(
            {
                r["spec"]["batch"]
                for r in self.ok
                if r["spec"]["measure"] == "train"
                and r["spec"].get("config_name") == config
                and not r["spec"].get("sweep")
            }
        )


def _get(record: dict[str, Any] | None, *path: str) -> float | None:
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def _increase(record: dict[str, Any] | None) -> float | None:
    peak = _get(record, "result", "memory", "peak_mib")
    baseline = _get(record, "result", "memory", "baseline_mib")
    return peak - baseline if peak is not None and baseline is not None else None


def _machine_section(records: Records) -> str:
    rows = []
    for allocator in records.values("allocator", "machine"):
        record = records.find("machine", allocator=allocator)
        rows.append(
            [
                allocator,
                _fmt(_get(record, "result", "conv1x1", "gflops_best")),
                _fmt(_get(record, "result", "conv1x1", "gflops_median")),
                _fmt(_get(record, "result", "mm", "gflops_best")),
                _fmt(_get(record, "result", "mm", "gflops_median")),
            ]
        )
    header = [
        "allocator",
        "conv1x1 GFLOP/s best",
        "conv1x1 median",
        "mm 2048 GFLOP/s best",
        "mm median",
    ]
    return (
        "Machine rate (float32): 1x1 convolution of 512 channels on a 16x16 map at batch 64, "
        "and a 2048x2048 matrix product.\n\n" + _table(header, rows)
    )


def _conv_rate(records: Records, allocator: str) -> float | None:
    return _get(records.find("machine", allocator=allocator), "result", "conv1x1", "gflops_best")


def _config_section(
    records: Records, config: str, variants: list[str], allocators: list[str]
) -> str:
    from benchmarks.plan import CONFIGS

    if not any(r["spec"].get("config_name") == config for r in records.ok):
        return ""
    batches = records.train_batches(config)
    K = CONFIGS[config]["K"]
    parts = [f"### Config `{config}`"]
    static_rows = []
    for variant in variants:
        record = records.find("static", config_name=config, variant=variant)
        if record is None:
            continue
        static_rows.append(
            [
                variant,
                f"{int(record['result']['parameters']):,}",
                _fmt(record["result"]["forward_flops_per_image"] / 1e9),
                _fmt(record["result"]["train_flops_per_image"] / 1e9),
            ]
        )
    parts.append(f"Model: `{CONFIGS[config]}`.")
    if static_rows:
        parts.append(
            _table(
                ["variant", "parameters", "forward GFLOP/image", "training GFLOP/image"],
                static_rows,
            )
        )
    speed_rows, memory_rows = [], []
    largest = batches[-1] if batches else None
    for variant in variants:
        static = records.find("static", config_name=config, variant=variant)
        for allocator in allocators:
            where = {"config_name": config, "variant": variant, "allocator": allocator, "K": K}
            trains = {b: records.find("train", batch=b, **where) for b in batches}
            evaluation = records.find("eval", **where)
            sampling = records.find("sample", **where)
            if not any(trains.values()) and evaluation is None and sampling is None:
                continue
            rate = _get(trains.get(largest), "result", "images_per_second") if largest else None
            flops = _get(static, "result", "train_flops_per_image")
            gflops = rate * flops / 1e9 if rate is not None and flops is not None else None
            fraction = _ratio(gflops, _conv_rate(records, allocator))
            speed_rows.append(
                [variant, allocator]
                + [_fmt(_get(trains[b], "result", "images_per_second")) for b in batches]
                + [
                    _fmt(_get(evaluation, "result", "images_per_second")),
                    _fmt(_get(sampling, "result", "median_seconds")),
                    _fmt(gflops),
                    _fmt(100 * fraction if fraction is not None else None),
                ]
            )
            memory_rows.append(
                [variant, allocator]
                + [_fmt(_get(trains[b], "result", "memory", "peak_mib")) for b in batches]
                + [_fmt(_increase(trains[b])) for b in batches]
                + [_fmt(_get(trains[b], "max_rss_mib")) for b in batches]
            )
    eval_batch = records.values("batch", "eval")
    sample = records.find("sample", config_name=config)
    sample_label = "sample s"
    if sample is not None:
        sample_label += f" ({sample['spec']['n']} @ T={sample['spec']['temperature']})"
    if speed_rows:
        header = (
            ["variant", "allocator"]
            + [f"train img/s b{b}" for b in batches]
            + [
                f"eval img/s b{eval_batch[0] if eval_batch else '?'}",
                sample_label,
                f"train GFLOP/s b{largest}",
                "% of conv rate",
            ]
        )
        parts.append(_table(header, speed_rows))
        parts.append(
            _table(
                ["variant", "allocator"]
                + [f"peak RSS in training b{b} (MiB)" for b in batches]
                + [f"increase in training b{b}" for b in batches]
                + [f"process ru_maxrss b{b}" for b in batches],
                memory_rows,
            )
        )
    parts.append(_ratio_section(records, config, K, variants, allocators, batches))
    return "\n\n".join(p for p in parts if p)


def _ratio_section(
    records: Records,
    config: str,
    K: int,
    variants: list[str],
    allocators: list[str],
    batches: list[int],
) -> str:
    from benchmarks.plan import PEER

    ours = [v for v in variants if v != PEER]
    if PEER not in variants or not ours:
        return ""

    def path(*keys: str) -> Callable[[dict[str, Any] | None], float | None]:
        return lambda record: _get(record, *keys)

    speed = path("result", "images_per_second")
    metrics: list[tuple[str, str, dict[str, Any], Callable[[dict[str, Any] | None], float | None]]]
    metrics = [(f"train img/s b{b}", "train", {"batch": b}, speed) for b in batches]
    metrics += [
        (f"peak RSS b{b}", "train", {"batch": b}, path("result", "memory", "peak_mib"))
        for b in batches
    ]
    metrics += [(f"increase b{b}", "train", {"batch": b}, _increase) for b in batches]
    metrics.append(("eval img/s", "eval", {}, speed))
    metrics.append(("sample time", "sample", {}, path("result", "median_seconds")))
    rows = []
    for variant in ours:
        for allocator in allocators:
            for reference in allocators:
                row = [variant, allocator, f"{PEER} {reference}"]
                for _, measure, extra, value in metrics:
                    where = {"config_name": config, "K": K, **extra}
                    mine = records.find(measure, variant=variant, allocator=allocator, **where)
                    theirs = records.find(measure, variant=PEER, allocator=reference, **where)
                    row.append(_fmt(_ratio(value(mine), value(theirs)), 3))
                rows.append(row)
    header = ["variant", "allocator", "against"] + [m[0] for m in metrics]
    return (
        f"Ratios flowkit / {PEER} (throughput: above 1 means flowkit is faster; memory and sample "
        "time: below 1 means flowkit uses less; increase is the training peak minus the RSS "
        "before training).\n\n" + _table(header, rows)
    )


def _sweep_section(records: Records, variants: list[str], allocators: list[str]) -> str:
    sweeps = [r for r in records.ok if r["spec"].get("sweep")]
    if not sweeps:
        return ""
    config = sweeps[0]["spec"]["config_name"]
    batch = sweeps[0]["spec"]["batch"]
    depths = sorted(
        {
            r["spec"]["config"]["K"]
            for r in records.ok
            if r["spec"]["measure"] == "train"
            and r["spec"].get("config_name") == config
            and r["spec"]["batch"] == batch
        }
    )
    columns = [(v, a) for v in variants for a in allocators]
    rows = []
    for depth in depths:
        row = [str(depth)]
        for variant, allocator in columns:
            record = records.find(
                "train",
                config_name=config,
                variant=variant,
                allocator=allocator,
                batch=batch,
                K=depth,
            )
            peak, increase = _get(record, "result", "memory", "peak_mib"), _increase(record)
            row.append(f"{_fmt(peak)} (+{_fmt(increase)})" if peak is not None else MISSING)
        rows.append(row)
    header = ["K"] + [f"{v} {a}" for v, a in columns]
    return (
        f"### Training memory against depth K (config `{config}`, batch {batch})\n\n"
        "Peak RSS over the training steps, and its increase over the RSS before them (MiB).\n\n"
        + _table(header, rows)
    )


def _describe(spec: dict[str, Any]) -> str:
    keys = ("measure", "variant", "config_name", "allocator", "batch")
    what = ", ".join(f"{k}={spec[k]}" for k in keys if k in spec)
    if spec.get("sweep"):
        what += f", K={spec['config']['K']}"
    return what


def _failures_section(records: Records) -> str:
    lines = [
        f"- {_describe(record.get('spec', {}))}: {record.get('error', 'unknown error')}"
        for record in records.failed
    ]
    lines += [
        f"- {_describe(record['spec'])}: non-finite training loss {record['result']['losses']}"
        for record in records.ok
        if record["result"].get("loss_finite") is False
    ]
    if not lines:
        return ""
    return "\n".join(["### Failed or suspect measurements", ""] + lines)


def git_commit(root: str) -> str:
    """``git rev-parse --short HEAD`` of ``root``, with ``+dirty`` for uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(records: Records) -> list[str]:
    """Lines describing the machine and software (this process's and the measurements')."""
    environments = [r["environment"] for r in records.ok if "environment" in r]
    versions: dict[str, str | None] = {}
    for environment in environments:
        versions.update(environment.get("libraries", {}))
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores ({usable} usable by this process)",
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}",
    ]
    if environments:
        first = environments[0]
        lines.append(f"- torch {first['torch']}, {first['threads']} intra-op threads")
        devices = sorted({e.get("device_name", e["device"]) for e in environments})
        lines.append(f"- device: {', '.join(devices)}")
    if versions:
        lines.append(
            "- "
            + ", ".join(
                f"{name} {version}" if version else f"{name} not installed"
                for name, version in sorted(versions.items())
            )
        )
    return lines


def render(
    records_list: list[dict[str, Any]],
    *,
    variants: list[str],
    allocators: list[str],
    configs: list[str],
    command: str,
    root: str,
    notes: list[str],
) -> str:
    """The Markdown report of one run."""
    records = Records(records_list)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## {now}, commit {git_commit(root)}",
        "Command: `" + command + "`",
        "\n".join(device_description(records)),
    ]
    parts += [f"Note: {note}" for note in notes]
    if records.find("machine") is not None:
        parts.append(_machine_section(records))
    for config in configs:
        parts.append(_config_section(records, config, variants, allocators))
    parts.append(_sweep_section(records, variants, allocators))
    parts.append(_failures_section(records))
    parts.append(
        "FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix "
        "products; elementwise work is not counted); training FLOPs include the backward pass and, "
        "with memory saving, the recomputation. Peak RSS in training is the process's resident-set "
        "high-water mark over warm-up and timed steps (VmHWM reset before them); ru_maxrss covers "
        "the whole process. On CUDA the peaks are `torch.cuda.max_memory_allocated`."
    )
    return "\n\n".join(p for p in parts if p) + "\n"
