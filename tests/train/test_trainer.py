import json
import math
import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import flowkit
from flowkit import load_flow
from flowkit.train import NonFiniteError, TrainConfig, Trainer, load_checkpoint
from flowkit.train.metrics import read_metrics
from flowkit.train.schedule import LearningRateSchedule
from tests.train.conftest import make_trainer


def test_training_lowers_test_bits_per_dim_and_writes_outputs(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=4)
    result = trainer.fit()
    start, end = result.test_bpd[0][1], result.test_bpd[-1][1]
    assert end < start - 0.5, result.test_bpd
    assert (tmp_path / "checkpoint.pt").is_file()
    assert (tmp_path / "bpd.png").is_file()
    grids = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert "epoch0004_t0.00.png" in grids and "epoch0004_t0.70.png" in grids
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["test_bpd"] for r in records if "test_bpd" in r] == [b for _, b in result.test_bpd]
    assert all(math.isfinite(r["train_bpd"]) for r in records if "train_bpd" in r)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == result.steps == 4 * (96 // 16)


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    whole = make_trainer(tiny_model_config, train, test, tmp_path / "whole", epochs=2).fit()
    first = make_trainer(
        tiny_model_config, train, test, tmp_path / "split", epochs=2, max_steps=7
    ).fit()
    assert first.steps == 7
    second = make_trainer(tiny_model_config, train, test, tmp_path / "split", epochs=2).fit(
        resume=True
    )
    assert first.train_losses + second.train_losses == whole.train_losses
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    # The metrics file describes one continuous run.
    steps = [
        r["step"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl") if "train_bpd" in r
    ]
    assert steps == sorted(set(steps)) == list(range(1, 13))
    # The resumed result holds the whole run's evaluations: the first part's, then its own.
    assert second.test_history[: len(first.test_history)] == first.test_history
    assert second.test_history[-1] == whole.test_history[-1]


KILL_SCRIPT = r"""
import os, sys, torch
sys.path.insert(0, {root!r})
from tests.train.conftest import blob_images, make_trainer
from flowkit.presets.glow import GlowConfig
import flowkit.train.checkpoint as checkpoint

torch.set_num_threads(1)  # as the test process: results are bit-exact for a fixed thread count
calls = {{"n": 0}}
real_save = torch.save

def dying_save(obj, stream, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == {kill_at}:
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        stream.flush()
        os._exit(9)  # killed in the middle of writing the checkpoint
    return real_save(obj, stream, *args, **kwargs)

checkpoint.torch.save = dying_save
config = GlowConfig(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16, seed=0)
make_trainer(
    config, blob_images(96, 0), blob_images(32, 1), {output!r}, epochs=2, checkpoint_every=2
).fit()
"""


def test_kill_in_the_middle_of_a_checkpoint_write_loses_nothing(blobs, tiny_model_config, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    train, test = blobs
    root = str(Path(__file__).resolve().parents[2])
    output = tmp_path / "killed"
    script = KILL_SCRIPT.format(root=root, kill_at=3, output=str(output))
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 9, completed.stderr[-2000:]
    # The second checkpoint (step 4) survived intact; the torn write left only a temporary file.
    state = load_checkpoint(output / "checkpoint.pt")
    assert state["step"] == 4
    assert [p.name for p in output.iterdir() if p.name.endswith(".tmp")]
    resumed = make_trainer(
        tiny_model_config, train, test, output, epochs=2, checkpoint_every=2
    ).fit(resume=True)
    whole = make_trainer(tiny_model_config, train, test, tmp_path / "whole", epochs=2).fit()
    assert resumed.train_losses == whole.train_losses[4:]
    a = load_checkpoint(output / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_nonfinite_step_is_skipped_and_the_layer_named(blobs, tiny_model_config, tmp_path):
    from flowkit.bijectors import AffineCoupling

    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=1)
    coupling = next(m for m in trainer.flow.modules() if isinstance(m, AffineCoupling))
    calls = {"n": 0}

    def poison(module, inputs, output):
        # The third training step goes non-finite, and so does the trainer's diagnostic re-run of
        # it (without autograd) that follows; initialisation and evaluation are left alone.
        if torch.is_grad_enabled():
            calls["n"] += 1
        if calls["n"] == 3:
            z, log_abs_det = output
            return z * float("nan"), log_abs_det
        return output

    handle = coupling.register_forward_hook(poison)
    with pytest.warns(RuntimeWarning, match="AffineCoupling"):
        result = trainer.fit()
    handle.remove()
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "nonfinite"]
    assert len(events) == 1 and "AffineCoupling" in events[0]["detail"]
    assert len(result.train_losses) == result.steps - 1
    assert all(math.isfinite(loss) for loss in result.train_losses)


def test_training_stops_after_repeated_nonfinite_steps(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=3, max_nonfinite=3)
    before = {k: v.clone() for k, v in trainer.flow.state_dict().items()}
    with torch.no_grad():  # a coupling network's output bias: initialisation leaves it alone
        dict(trainer.flow.named_parameters())[
            "bijector.bijectors.1.bijectors.2.conditioner.conv_out.bias"
        ].fill_(float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError, match="3 consecutive"):
            trainer.fit()
    assert set(before) == set(trainer.flow.state_dict())


def test_load_flow_rebuilds_the_trained_model(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=1, ema=False)
    trainer.fit()
    flow, state = load_flow(tmp_path / "checkpoint.pt", weights="raw")
    x = torch.rand(4, 1, 8, 8) - 0.5
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x), trainer.flow.eval().log_prob(x))
    assert json.dumps(state["train_config"])  # plain, serialisable settings


def test_vector_data_trains_with_the_same_trainer(tmp_path):
    from flowkit import Flow, StandardNormal
    from flowkit.bijectors import ActNorm, AffineCoupling, Compose, Permute, channel_mask
    from flowkit.nn import MLP
    from flowkit.train import TrainConfig, Trainer

    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(512, generator=generator) * math.pi
    data = torch.stack([angle.cos(), angle.sin()], -1) + 0.05 * torch.randn(
        512, 2, generator=generator
    )
    parts = []
    for _ in range(4):
        parts += [
            ActNorm(2, event_rank=1),
            AffineCoupling(MLP(1, 2, (32, 32)), channel_mask(2, event_rank=1), scale_fn="exp"),
            Permute.reverse(2),
        ]
    flow = Flow(StandardNormal((2,)), Compose(parts))
    config = TrainConfig(
        output=str(tmp_path),
        batch_size=64,
        epochs=15,
        lr=5e-3,
        warmup_epochs=1,
        progress=False,
        ema=False,
        device="cpu",
    )
    result = Trainer(flow, config, data.numpy(), data[:256]).fit()
    assert result.test_nll[-1][1] < result.test_nll[0][1] - 0.5


def test_trained_small_preset_reconstructs_test_images_and_samples_at_zero_temperature(tmp_path):
    from flowkit.data import load_dataset, to_model_input
    from flowkit.presets.glow import GlowConfig, build_glow, config_dict
    from flowkit.presets.runs import get_run_preset
    from flowkit.train import TrainConfig, Trainer

    preset = get_run_preset("glow-small")
    model = GlowConfig(**preset.model)
    settings = {
        **preset.train,
        "output": str(tmp_path),
        "max_steps": 40,
        "num_train": 1024,
        "num_test": 128,
        "progress": False,
        "device": "cpu",
        "num_samples": 4,
    }
    train = load_dataset("fashion-mnist-small", split="train")
    test = load_dataset("fashion-mnist-small", split="test")
    trainer = Trainer(
        build_glow(model), TrainConfig(**settings), train, test, model_config=config_dict(model)
    )
    result = trainer.fit()
    assert result.final_test_bpd < result.test_bpd[0][1]
    flow = trainer.flow.eval()
    x = to_model_input(test.images[:64], 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rebuilt = flow.decode(flow.encode(x))
        samples = flow.sample(16, temperature=0.0)
    assert float((rebuilt - x).abs().max()) < 1e-4
    assert bool(torch.isfinite(samples).all())


def test_tensorboard_event_files_hold_the_jsonl_scalars(blobs, tiny_model_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, test = blobs
    make_trainer(tiny_model_config, train, test, tmp_path, epochs=1, tensorboard=True).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    records = read_metrics(tmp_path / "metrics.jsonl")
    expected = [(r["step"], r["test_bpd"]) for r in records if "test_bpd" in r]
    logged = [(e.step, e.value) for e in events.Scalars("test_bpd")]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    train_steps = [r["step"] for r in records if "train_bpd" in r]
    assert [e.step for e in events.Scalars("train_bpd")] == train_steps


def test_tiny_epochs_do_not_rewrite_the_checkpoint_every_step(tmp_path, monkeypatch):
    import flowkit.train.trainer as trainer_module

    writes = []
    real = trainer_module.save_checkpoint

    def counting(state, path):
        writes.append(state["step"])
        return real(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", counting)
    torch.manual_seed(0)
    flow = flowkit.presets.nsf(2, transforms=1, hidden_features=(4,))
    config = TrainConfig(
        output=str(tmp_path),
        batch_size=32,
        epochs=500,
        optimizer="adam",
        warmup_epochs=0.0,
        progress=False,
        device="cpu",
        val_fraction=0.2,
    )
    # 40 rows, 32 of them for training: one step an epoch, 500 epochs.
    result = Trainer(flow, config, torch.randn(40, 2)).fit()
    assert result.steps == 500
    # The first epoch end and the end of the run (well under checkpoint_seconds apart).
    assert writes[0] == 1 and writes[-1] == 500 and len(writes) <= 3, writes
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 500


def test_an_early_stopped_table_run_resumes_exactly(tmp_path):
    rows = torch.randn(120, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 3])

    def run(output, resume=False, **overrides):
        settings = dict(
            output=str(output),
            batch_size=16,
            epochs=400,
            lr=0.05,
            optimizer="adam",
            warmup_epochs=0.0,
            ema=False,
            progress=False,
            device="cpu",
            val_fraction=0.2,
            patience=2,
        )
        settings.update(overrides)
        flow = flowkit.presets.nsf(2, transforms=1, hidden_features=(8,), seed=0)
        return Trainer(flow, TrainConfig(**settings), rows, rows[:40]).fit(resume=resume)

    whole = run(tmp_path / "whole")
    assert whole.stopped_early and whole.epochs_completed < 400
    first = run(tmp_path / "split", max_steps=whole.steps // 2)
    second = run(tmp_path / "split", resume=True)
    assert first.train_losses + second.train_losses == whole.train_losses
    assert second.best == whole.best and second.stopped_early
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("whole", "split"))
    assert all(torch.equal(a["best"]["model"][key], b["best"]["model"][key]) for key in a["model"])
    # A finished run resumed with more patience goes on from where it stopped.
    third = run(tmp_path / "split", resume=True, patience=50, max_steps=whole.steps + 6)
    assert third.steps == whole.steps + 6


# AdamW with the official TarFlow betas, three steps of warm-up, then a cosine to a tenth.
SCHEDULED = dict(
    optimizer="adamw",
    beta2=0.95,
    weight_decay=1e-3,
    warmup_epochs=None,
    warmup_steps=3,
    lr_decay="cosine",
    min_lr_ratio=0.1,
)


def test_every_step_sets_the_scheduled_rate_on_every_parameter_group(
    blobs, tiny_model_config, tmp_path
):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, epochs=2, **SCHEDULED)
    applied = []

    def record(optimizer, args, kwargs):
        applied.append([group["lr"] for group in optimizer.param_groups])

    handle = register_optimizer_step_pre_hook(record)
    try:
        result = trainer.fit()
    finally:
        handle.remove()
    # 96 images in batches of 16: 6 steps an epoch, so the decay ends at step 12.
    schedule = LearningRateSchedule(
        5e-3, warmup_steps=3, total_steps=12, decay="cosine", min_lr_ratio=0.1
    )
    expected = [schedule(step) for step in range(1, result.steps + 1)]
    assert result.steps == 12 and expected[2] == 5e-3 and expected[-1] == pytest.approx(5e-4)
    groups = len(trainer.state.optimizer.param_groups)
    assert applied == [[rate] * groups for rate in expected]
    logged = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
    assert logged == expected
    optimizer = trainer.state.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-3


def test_resume_is_exact_across_the_end_of_the_warm_up_and_ignores_old_scheduler_state(
    blobs, tiny_model_config, tmp_path
):
    from flowkit.train import ResumeMismatchError, TrainingInterrupted
    from flowkit.train.checkpoint import save_checkpoint
    from tests.train.test_runs import _interrupt_at

    train, test = blobs
    whole = make_trainer(
        tiny_model_config, train, test, tmp_path / "whole", epochs=2, **SCHEDULED
    ).fit()
    split = tmp_path / "split"
    trainer = make_trainer(tiny_model_config, train, test, split, epochs=2, **SCHEDULED)
    handle = _interrupt_at(trainer, 2)
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    handle.remove()
    path = tmp_path / "split" / "checkpoint.pt"
    saved = load_checkpoint(path)
    assert saved["step"] == 2 and "scheduler" not in saved
    # Checkpoints of earlier versions carry a LambdaLR's state and its initial_lr in the groups.
    saved["scheduler"] = {"base_lrs": [5e-3], "last_epoch": 2, "_last_lr": [5e-3], "verbose": 0}
    for group in saved["optimizer"]["param_groups"]:
        group["initial_lr"] = 5e-3
    save_checkpoint(saved, path)
    # A decay ends at the run's last step: moving that step on resume is refused.
    with pytest.raises(ResumeMismatchError, match="cosine learning-rate decay ending at step 18"):
        make_trainer(tiny_model_config, train, test, tmp_path / "split", epochs=3, **SCHEDULED).fit(
            resume=True
        )
    resumed = make_trainer(
        tiny_model_config, train, test, tmp_path / "split", epochs=2, **SCHEDULED
    ).fit(resume=True)
    assert resumed.train_losses == whole.train_losses[2:]
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(path)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key])
    logged = [
        [r["lr"] for r in read_metrics(run / "metrics.jsonl") if "lr" in r]
        for run in (tmp_path / "whole", tmp_path / "split")
    ]
    assert logged[0] == logged[1] and len(logged[0]) == 12


def test_evaluation_sees_the_model_in_evaluation_mode_and_training_resumes_in_training_mode(
    tmp_path,
):
    # Dropout, BatchNorm statistics and stochastic log-determinants must not act on the test set.
    rows = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    flow = flowkit.presets.nsf(2, transforms=1, hidden_features=(8,), seed=0)
    seen = []
    flow.bijector.register_forward_hook(
        lambda module, args, output: seen.append((torch.is_grad_enabled(), module.training))
    )
    config = TrainConfig(
        output=str(tmp_path / "run"), batch_size=16, epochs=2, ema=False, progress=False
    )
    Trainer(flow, config, rows, rows[:32]).fit()
    assert {training for grad, training in seen if grad} == {True}
    assert {training for grad, training in seen if not grad} == {False}
    assert flow.training
