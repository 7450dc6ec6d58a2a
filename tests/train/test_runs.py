"""Runs that cannot be lost: run directories, the non-finite guard, Ctrl-C, resume, time limits."""

import json
import math
import os
import signal
import warnings

import pytest
import torch

from flowkit import load
from flowkit.train import (
    CheckpointError,
    NonFiniteError,
    ResumeMismatchError,
    RunExistsError,
    RunLockedError,
    TrainingInterrupted,
    load_checkpoint,
)
from flowkit.train.metrics import read_metrics
from flowkit.train.rundir import RunDirectory
from tests.train.conftest import make_trainer


def _snapshot(directory):
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture
def finished(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    output = tmp_path / "run"
    make_trainer(tiny_model_config, train, test, output, epochs=1).fit()
    return output


def test_a_finished_run_is_never_overwritten_without_being_asked(
    finished, blobs, tiny_model_config
):
    train, test = blobs
    before = _snapshot(finished)
    for overrides in ({"lr": 1e-4}, {"max_steps": 1}):
        # In Python the error names the arguments; the command line names its options.
        with pytest.raises(RunExistsError, match="resume=True.*overwrite=True"):
            make_trainer(tiny_model_config, train, test, finished, **overrides).fit()
    assert _snapshot(finished) == before


def test_a_run_that_stopped_before_recording_anything_starts_again_without_flags(
    blobs, tiny_model_config, tmp_path
):
    # What a start that failed at its first step (a missing extra, an early Ctrl-C) leaves.
    (tmp_path / "config.json").write_text(json.dumps({"left": "by a failed start"}))
    assert not RunDirectory(tmp_path).holds_run()
    train, test = blobs
    make_trainer(tiny_model_config, train, test, tmp_path, max_steps=1).fit()
    assert "left" not in json.loads((tmp_path / "config.json").read_text())
    assert RunDirectory(tmp_path).holds_run()


def test_overwrite_replaces_every_file_of_the_old_run(finished, blobs, tiny_model_config):
    train, test = blobs
    stale = finished / "samples" / "epoch0099_t0.00.png"
    stale.write_bytes(b"old grid")
    keep = finished / "notes.txt"
    keep.write_text("the user's own file")
    make_trainer(tiny_model_config, train, test, finished, max_steps=2).fit(overwrite=True)
    assert not stale.exists()
    assert keep.read_text() == "the user's own file"
    steps = [r["step"] for r in read_metrics(finished / "metrics.jsonl")]
    assert max(steps) == 2
    assert load_checkpoint(finished / "checkpoint.pt")["step"] == 2


def test_a_second_run_on_the_same_directory_is_refused_naming_the_process(
    blobs, tiny_model_config, tmp_path
):
    train, test = blobs
    holder = RunDirectory(tmp_path)
    holder.open(resume=False, overwrite=False)
    try:
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            make_trainer(tiny_model_config, train, test, tmp_path).fit()
    finally:
        holder.close()
    # Released: the directory is free again (a crashed holder releases it the same way).
    make_trainer(tiny_model_config, train, test, tmp_path, max_steps=1).fit()


def test_temporary_files_of_interrupted_writes_are_removed_at_the_next_start(
    finished, blobs, tiny_model_config
):
    train, test = blobs
    leftover = finished / "checkpoint.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    make_trainer(tiny_model_config, train, test, finished, epochs=2).fit(resume=True)
    assert not leftover.exists()


def test_empty_output_is_refused(blobs, tiny_model_config):
    train, test = blobs
    with pytest.raises(ValueError, match="output"):
        make_trainer(tiny_model_config, train, test, "")


def _on_training_passes(trainer, action):
    """Call ``action(n, output)`` on the n-th training pass through the first affine coupling."""
    from flowkit.bijectors import AffineCoupling

    coupling = next(m for m in trainer.flow.modules() if isinstance(m, AffineCoupling))
    calls = {"n": 0}

    def hook(module, inputs, output):
        if torch.is_grad_enabled():
            calls["n"] += 1
        return action(calls["n"], output)

    return coupling.register_forward_hook(hook)


def _poison_after(trainer, calls_before_nan):
    def poison(calls, output):
        z, log_abs_det = output
        return (z * float("nan"), log_abs_det) if calls > calls_before_nan else output

    return _on_training_passes(trainer, poison)


def test_the_nonfinite_guard_keeps_the_last_finite_checkpoint(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    # 6 steps per epoch: epoch 1 is finite and checkpointed, epoch 2 diverges at its 3rd step.
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=3, max_nonfinite=2)
    handle = _poison_after(trainer, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError, match=r"last finite state \(step 6\)") as raised:
            trainer.fit()
    handle.remove()
    assert "checkpoint.diverged.pt" in str(raised.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    assert load_checkpoint(tmp_path / "checkpoint.diverged.pt")["step"] == 10
    flow = load(tmp_path / "checkpoint.pt")
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(torch.rand(4, 1, 8, 8) - 0.5)).all()


def test_a_nonfinite_evaluation_stops_the_run_and_keeps_the_checkpoint(
    blobs, tiny_model_config, tmp_path, monkeypatch
):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=3)
    real = trainer.test_data.evaluate
    calls = {"n": 0}

    def evaluate(*args, **kwargs):
        calls["n"] += 1  # start, epoch 1, epoch 2 (infinite)
        return math.inf if calls["n"] == 3 else real(*args, **kwargs)

    monkeypatch.setattr(trainer.test_data, "evaluate", evaluate)
    with pytest.raises(NonFiniteError, match=r"test bits/dim is inf.*\(step 6\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6


def _interrupt_at(trainer, step):
    interrupted = {"done": False}

    def interrupt(calls, output):
        if calls == step and not interrupted["done"]:
            interrupted["done"] = True
            os.kill(os.getpid(), signal.SIGINT)
        return output

    return _on_training_passes(trainer, interrupt)


AUGMENTED = dict(augment_shift=0.2, augment_flip=True, noise_std=0.01)


@pytest.mark.parametrize(
    ("interrupt_step", "settings"), [(3, {}), (8, {}), (5, AUGMENTED)], ids=["3", "8", "augmented"]
)
def test_ctrl_c_checkpoints_the_current_step_and_resume_is_exact(
    blobs, tiny_model_config, tmp_path, interrupt_step, settings
):
    train, test = blobs
    whole = make_trainer(
        tiny_model_config, train, test, tmp_path / "whole", epochs=2, **settings
    ).fit()
    trainer = make_trainer(tiny_model_config, train, test, tmp_path / "split", epochs=2, **settings)
    handle = _interrupt_at(trainer, interrupt_step)
    with pytest.raises(
        TrainingInterrupted, match=f"interrupted at step {interrupt_step}; continue with --resume"
    ):
        trainer.fit()
    handle.remove()
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == interrupt_step
    resumed = make_trainer(
        tiny_model_config, train, test, tmp_path / "split", epochs=2, **settings
    ).fit(resume=True)
    assert resumed.train_losses == whole.train_losses[interrupt_step:]
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert all(torch.equal(a["ema"][key], b["ema"][key]) for key in a["ema"])

    def without_time(path):
        return [{k: v for k, v in r.items() if k not in ("time",)} for r in read_metrics(path)]

    assert without_time(tmp_path / "split" / "metrics.jsonl") == without_time(
        tmp_path / "whole" / "metrics.jsonl"
    )


def test_resume_applies_a_new_learning_rate_and_records_it(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    make_trainer(tiny_model_config, train, test, tmp_path, epochs=2, max_steps=3).fit()
    make_trainer(tiny_model_config, train, test, tmp_path, epochs=2, lr=1e-4, max_steps=5).fit(
        resume=True
    )
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["train_config"]["lr"] == 1e-4
    assert "scheduler" not in state
    warmup_steps = 0.5 * 6  # make_trainer's warm-up: half an epoch of 6 steps
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        1e-4 * min(1.0, 5 / warmup_steps)
    )
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["train"]["lr"] == 1e-4 and recorded["train"]["max_steps"] == 5
    lrs = [
        r["lr"]
        for r in read_metrics(tmp_path / "metrics.jsonl")
        if r.get("step", 0) > 3 and "lr" in r
    ]
    assert lrs and all(lr <= 1e-4 for lr in lrs)


def test_resume_refuses_settings_that_cannot_change(finished, blobs, tiny_model_config):
    train, test = blobs
    before = _snapshot(finished)
    with pytest.raises(ResumeMismatchError, match=r"batch_size: 16 -> 32.*seed: 0 -> 3"):
        make_trainer(tiny_model_config, train, test, finished, batch_size=32, seed=3).fit(
            resume=True
        )
    assert _snapshot(finished) == before


def test_max_minutes_stops_cleanly_with_evaluation_and_checkpoint(
    blobs, tiny_model_config, tmp_path
):
    train, test = blobs
    result = make_trainer(
        tiny_model_config, train, test, tmp_path, epochs=50, max_minutes=1e-6
    ).fit()
    assert result.steps == 1
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[-1]["event"] == "end" and "test_bpd" in records[-1]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    times = [r["time"] for r in records]
    assert times == sorted(times)


def test_a_checkpoint_with_foreign_objects_is_refused_without_advice_to_allow_them(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 2, "model": {}, "payload": Payload()}, path)
    with pytest.raises(
        CheckpointError, match="holds Python objects that flowkit does not load"
    ) as raised:
        load_checkpoint(path)
    assert "safe_globals" not in str(raised.value)


def test_resuming_a_checkpoint_with_an_unknown_setting_names_it(finished, blobs, tiny_model_config):
    train, test = blobs
    state = load_checkpoint(finished / "checkpoint.pt")
    state["train_config"]["learning_speed"] = 3
    torch.save(state, finished / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="learning_speed"):
        make_trainer(tiny_model_config, train, test, finished, epochs=2).fit(resume=True)


def test_a_sigkill_in_the_middle_of_a_checkpoint_write_then_resume_matches_the_unbroken_run(
    tmp_path, capsys
):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "crash_trials.py"
    spec = importlib.util.spec_from_file_location("crash_trials", script)
    crash_trials = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crash_trials)
    # Seed 0's first trial kills the run halfway through its 13th checkpoint write.
    assert crash_trials.main(["--trials", "1", "--seed", "0", "--workdir", str(tmp_path)]) == 0
    assert "trial 0: same after save:13:SIGKILL" in capsys.readouterr().out


def test_the_weight_average_starts_from_the_initialised_model(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "never initialised" warning
        trainer.fit()
    raw, averaged = trainer.flow.state_dict(), trainer.averaged_flow.state_dict()
    # After one step the average is within one step of the raw weights everywhere, including
    # ActNorm's data-dependent scales (an average of the untrained copy would sit at zero).
    for key in raw:
        if key.endswith("log_scale") and "norm" in key:
            assert torch.allclose(raw[key], averaged[key], atol=0.05), key


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_without_cuda_is_a_clear_error(
    blobs, tiny_model_config, tmp_path, monkeypatch, device
):
    from flowkit.train import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, test = blobs
    with pytest.raises(ConfigError, match="CUDA, which is not available here"):
        make_trainer(tiny_model_config, train, test, tmp_path, device=device)
