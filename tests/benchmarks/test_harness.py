import json
import math
import time

import pytest
import torch

from benchmarks import run
from benchmarks.measure import measure
from benchmarks.meters import CpuMemoryMeter, CpuTimer, CudaMemoryMeter, CudaTimer, meters_for
from benchmarks.models import build_model
from benchmarks.options import RUNTIME_OPTIONS, apply_runtime
from benchmarks.plan import CONFIGS, FULL, TUNED_MALLOC, VARIANTS, allocator_env, build_plan
from benchmarks.report import render

TINY = {
    "K": 1,
    "L": 2,
    "input_shape": [1, 8, 8],
    "hidden_channels": 4,
    "coupling": "affine",
    "permutation": "conv1x1_lu",
}


def positive_finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def tiny_spec(measure_kind, **fields):
    spec = {
        "measure": measure_kind,
        "library": "flowkit",
        "variant": "flowkit",
        "config_name": "tiny",
        "config": dict(TINY),
        "preset": {},
        "runtime": {},
        "device": "cpu",
        "seed": 0,
        "allocator": "default",
    }
    spec.update(fields)
    return spec


# --- measurements, in this process ---------------------------------------------------------------
@pytest.mark.parametrize("memory_saving", [False, True], ids=["plain", "memory-saving"])
def test_train_measurement_reports_throughput_and_memory(memory_saving):
    spec = tiny_spec("train", preset={"memory_saving": memory_saving}, batch=4, steps=2, warmup=1)
    record = measure(spec)
    result = record["result"]
    assert record["ok"] and record["spec"]["preset"] == {"memory_saving": memory_saving}
    assert len(result["seconds"]) == 2 and all(positive_finite(s) for s in result["seconds"])
    assert result["images_per_second"] == pytest.approx(4 * 2 / sum(result["seconds"]))
    assert result["loss_finite"] and math.isfinite(result["final_loss"])
    assert positive_finite(result["memory"]["peak_mib"])
    assert result["memory"]["peak_mib"] >= result["memory"]["baseline_mib"]
    assert record["max_rss_mib"] >= result["memory"]["peak_mib"] * 0.99
    assert record["environment"]["torch"] == torch.__version__


def test_eval_and_sample_measurements():
    evaluation = measure(tiny_spec("eval", batch=8, steps=2, warmup=1))["result"]
    assert evaluation["finite"] and len(evaluation["seconds"]) == 2
    assert positive_finite(evaluation["images_per_second"])
    sample = measure(tiny_spec("sample", n=3, temperature=0.7, repeats=2, warmup=1, init_batch=8))
    assert sample["result"]["shape"] == [3] + TINY["input_shape"]
    assert sample["result"]["finite"] and positive_finite(sample["result"]["median_seconds"])


def test_static_measurement_counts_parameters_and_flops():
    plain = measure(tiny_spec("static", batch=2))["result"]
    flow = build_model("flowkit", TINY, {}).module
    assert plain["parameters"] == sum(p.numel() for p in flow.parameters())
    # Training runs the forward pass plus a backward pass that costs about twice as much.
    assert 2.0 < plain["train_flops_per_image"] / plain["forward_flops_per_image"] < 4.0
    saving = measure(tiny_spec("static", batch=2, preset={"memory_saving": True}))["result"]
    assert saving["parameters"] == plain["parameters"]
    assert saving["forward_flops_per_image"] == plain["forward_flops_per_image"]
    # The backward pass re-runs each step (and its inverse) instead of reading stored activations.
    assert saving["train_flops_per_image"] > plain["train_flops_per_image"]


def test_unknown_options_are_rejected_with_the_known_ones():
    model = build_model("flowkit", TINY, {})
    with pytest.raises(ValueError, match="channels_last"):
        apply_runtime(model, "flowkit", torch.device("cpu"), {"chanels_last": True})
    with pytest.raises(TypeError):
        build_model("flowkit", TINY, {"no_such_option": 1})
    with pytest.raises(ValueError, match="train"):
        measure(tiny_spec("trian"))


def test_runtime_options_reach_the_model():
    model = build_model("flowkit", TINY, {})
    runtime = apply_runtime(model, "flowkit", torch.device("cpu"), {"channels_last": True})
    x = runtime.prepare(torch.rand(2, 1, 8, 8) - 0.5)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert list(RUNTIME_OPTIONS)[-1] == "compile"


# --- meters ---------------------------------------------------------------------------------------
class FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing):
        assert enable_timing
        self.time = None
        self.synchronized = False

    def record(self):
        FakeEvent.clock += 0.25
        self.time = FakeEvent.clock

    def synchronize(self):
        self.synchronized = True

    def elapsed_time(self, end):
        assert end.synchronized
        return (end.time - self.time) * 1000.0


class FakeCuda:
    """Stand-in for torch.cuda: events on a fake clock and an allocator that we drive by hand."""

    Event = FakeEvent

    def __init__(self):
        self.allocated = 3 * 2**20
        self.peak = 100 * 2**20
        self.calls = []

    def synchronize(self):
        self.calls.append("synchronize")

    def reset_peak_memory_stats(self):
        self.calls.append("reset")
        self.peak = self.allocated

    def memory_allocated(self):
        return self.allocated

    def max_memory_allocated(self):
        return self.peak


def test_cuda_meters_use_events_and_the_allocator_peak():
    cuda = FakeCuda()
    timer, memory = meters_for("cuda", cuda=cuda)
    assert isinstance(timer, CudaTimer) and isinstance(memory, CudaMemoryMeter)
    timer.start()
    assert timer.stop() == pytest.approx(0.25)
    memory.start()
    assert cuda.calls[:2] == ["synchronize", "reset"]
    cuda.peak = 40 * 2**20  # what the work allocated at its peak
    report = memory.stop()
    assert report["peak_mib"] == pytest.approx(40.0)
    assert report["baseline_mib"] == pytest.approx(3.0)
    assert report["method"] == "cuda.max_memory_allocated" and "host_peak_mib" in report


def test_cpu_meters_are_chosen_for_the_cpu_and_other_devices_are_refused():
    timer, memory = meters_for("cpu")
    assert isinstance(timer, CpuTimer) and isinstance(memory, CpuMemoryMeter)
    timer.start()
    time.sleep(0.01)
    assert timer.stop() >= 0.009
    with pytest.raises(ValueError, match="tpu"):
        meters_for("tpu")


@pytest.mark.parametrize("allow_reset", [True, False], ids=["vmhwm", "sampled"])
def test_cpu_memory_meter_sees_a_short_lived_allocation(allow_reset):
    import mmap

    meter = CpuMemoryMeter(allow_reset=allow_reset)
    meter.start()
    # A fresh anonymous mapping, touched page by page: unlike a tensor it cannot reuse heap memory
    # that earlier tests freed (flowkit's allocator policy keeps freed blocks in the heap).
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\1" * len(block))
    time.sleep(0.05)
    block.close()
    report = meter.stop()
    assert report["method"] == ("vmhwm" if allow_reset else "sampled")
    assert report["peak_mib"] - report["baseline_mib"] >= 48


# --- plan ---------------------------------------------------------------------------------------
def test_allocator_environments():
    base = {"PATH": "/bin", "MALLOC_MMAP_MAX_": "0"}
    assert allocator_env("default", base) == {"PATH": "/bin"}
    assert allocator_env("tuned", base) == {"PATH": "/bin", **TUNED_MALLOC}
    with pytest.raises(ValueError, match="tuned"):
        allocator_env("jemalloc", base)


def test_full_plan_covers_every_variant_config_and_allocator_once():
    plan = build_plan(
        configs=["paper", "small"],
        variants=list(VARIANTS),
        allocators=["default", "tuned"],
        sections=["machine", "static", "train", "eval", "sample", "sweep"],
        sizes=FULL,
    )
    keys = [json.dumps(spec, sort_keys=True) for spec in plan]
    assert len(keys) == len(set(keys))
    static = [s for s in plan if s["measure"] == "static"]
    assert len(static) == 2 * len(VARIANTS) and {s["allocator"] for s in static} == {"default"}
    train = [s for s in plan if s["measure"] == "train" and not s.get("sweep")]
    assert len(train) == 2 * len(VARIANTS) * 2 * len(FULL.train_batches)
    for spec in plan:
        if "variant" in spec:
            assert spec["preset"] == VARIANTS[spec["variant"]].preset
    sweep_depths = {
        (s["variant"], s["allocator"], s["config"]["K"])
        for s in plan
        if s["measure"] == "train"
        and s["config_name"] == "paper"
        and s["batch"] == FULL.sweep_batch
    }
    assert len(sweep_depths) == len(VARIANTS) * 2 * len(FULL.sweep_K)


# --- report -------------------------------------------------------------------------------------
def fake_record(measure_kind, variant, allocator, result, **spec):
    library = "normflows" if variant == "normflows" else "flowkit"
    full_spec = {"measure": measure_kind, "allocator": allocator, **spec}
    if variant is not None:
        full_spec.update(variant=variant, library=library)
    return {
        "ok": True,
        "spec": full_spec,
        "environment": {
            "torch": "2.x",
            "threads": 2,
            "device": "cpu",
            "libraries": {"flowkit": "0.1.0", "normflows": None},
        },
        "max_rss_mib": 500.0,
        "result": result,
    }


def test_report_ratios_come_from_the_records():
    small = dict(CONFIGS["small"])  # the report finds records by their config
    records = [
        fake_record(
            "machine",
            None,
            "tuned",
            {
                "conv1x1": {"gflops_best": 100.0, "gflops_median": 90.0},
                "mm": {"gflops_best": 50.0, "gflops_median": 40.0},
            },
        ),
        fake_record(
            "static",
            "flowkit",
            "tuned",
            {"parameters": 10, "forward_flops_per_image": 1e9, "train_flops_per_image": 3e9},
            config_name="small",
            config=small,
            batch=2,
        ),
    ]
    speeds = {
        ("flowkit", "tuned"): 30.0,
        ("normflows", "tuned"): 12.0,
        ("normflows", "default"): 8.0,
    }
    for (variant, allocator), speed in speeds.items():
        records.append(
            fake_record(
                "train",
                variant,
                allocator,
                {
                    "images_per_second": speed,
                    "memory": {"peak_mib": 100.0 * speed, "baseline_mib": 50.0},
                },
                config_name="small",
                config=small,
                batch=16,
            )
        )
    failure = {"measure": "eval", "variant": "flowkit"}
    records.append({"ok": False, "spec": failure, "error": "Boom: out of memory"})
    diverged = {"images_per_second": 1.0, "loss_finite": False, "losses": [3.0, math.inf]}
    records.append(
        fake_record(
            "train", "flowkit", "default", diverged, config_name="small", config=small, batch=16
        )
    )
    text = render(
        records,
        variants=["normflows", "flowkit"],
        allocators=["default", "tuned"],
        configs=["small"],
        command="python -m benchmarks.run",
        root=".",
        notes=[],
    )
    rows = [
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in text.splitlines()
        if line.startswith("|")
    ]
    # Columns: train img/s, peak RSS, its increase over the baseline, eval img/s, sample time;
    # the last two were not measured.
    assert ("flowkit", "tuned", "normflows tuned") + tuple(
        f"{value:.2f}" for value in (30 / 12, 3000 / 1200, 2950 / 1150)
    ) + ("-", "-") in rows
    assert ("flowkit", "tuned", "normflows default") + tuple(
        f"{value:.2f}" for value in (30 / 8, 3000 / 800, 2950 / 750)
    ) + ("-", "-") in rows
    # Training GFLOP/s = 3 GFLOP/image x 30 images/s, as a percentage of the 100 GFLOP/s conv rate.
    assert any(r[:3] == ("flowkit", "tuned", "30.0") and r[-2:] == ("90.0", "90.0") for r in rows)
    assert "Boom: out of memory" in text
    assert "- torch 2.x, 2 intra-op threads" in text
    assert "- flowkit 0.1.0, normflows not installed" in text
    assert "allocator=default, batch=16: non-finite training loss [3.0, inf]" in text


# --- the whole quick path, with the peer missing ------------------------------------------------
@pytest.mark.slow
def test_quick_run_measures_flowkit_and_skips_a_missing_peer(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "library_available", lambda name: False)
    results, markdown = tmp_path / "records.json", tmp_path / "BENCHMARKS.md"
    code = run.main(
        [
            "--quick",
            "--variants",
            "flowkit,normflows",
            "--allocators",
            "tuned",
            "--only",
            "machine,static,train,eval,sample",
            "--json",
            str(results),
            "--output",
            str(markdown),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "normflows is not installed" in out and "skipped" in out
    records = json.loads(results.read_text())
    measured = sorted(r["spec"]["measure"] for r in records)
    assert measured == ["eval", "machine", "sample", "static", "train"]
    for record in records:
        assert record["ok"], record
        assert TUNED_MALLOC.items() <= record["environment"]["malloc_env"].items()
        assert record["spec"].get("library", "flowkit") == "flowkit"
        assert positive_finite(record["max_rss_mib"])
    by_kind = {r["spec"]["measure"]: r["result"] for r in records}
    assert positive_finite(by_kind["train"]["images_per_second"])
    assert by_kind["train"]["loss_finite"]
    assert positive_finite(by_kind["train"]["memory"]["peak_mib"])
    assert positive_finite(by_kind["eval"]["images_per_second"])
    assert positive_finite(by_kind["sample"]["median_seconds"])
    assert positive_finite(by_kind["static"]["train_flops_per_image"])
    assert positive_finite(by_kind["machine"]["conv1x1"]["gflops_best"])
    assert positive_finite(by_kind["machine"]["mm"]["gflops_best"])
    written = markdown.read_text()
    assert written.startswith("# Benchmarks")
    assert "Command: `python -m benchmarks.run --quick" in written
    assert "commit " in written and "### Config `small`" in written
    assert f"- torch {torch.__version__}" in written and "- CPU: " in written
