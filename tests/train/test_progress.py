"""The progress display: the running loss and the last evaluations, a line per epoch."""

from __future__ import annotations

import io

from flowkit.train.progress import Progress


def run_epoch(progress: Progress, epoch: int, losses: list[float], test: float) -> None:
    bar = progress.start_epoch(epoch, len(losses), 0, 0)
    for value in losses:
        progress.loss(value)
        bar.update(1)
    bar.close()
    record = {"step": len(losses), "epoch": epoch + 1, "event": "epoch"}
    progress.record({**record, f"test_{progress.key}": test})


def test_the_bar_shows_the_running_loss_and_the_last_evaluation():
    stream = io.StringIO()
    progress = Progress("nll", 2, interactive=True, stream=stream)
    progress.record({"step": 0, "epoch": 0, "event": "start", "test_nll": 4.25, "val_nll": 4.5})
    bar = progress.start_epoch(0, 2, 0, 0)
    for value in (3.0, 2.0):
        progress.loss(value)
        bar.update(1)
    assert progress.status() == "loss 2.5000, val nll 4.5000, test nll 4.2500"
    bar.close()
    progress.record({"step": 2, "epoch": 1, "event": "epoch", "test_nll": 1.75})
    frames = stream.getvalue().split("\r")
    assert frames[1].startswith("epoch 1/2:"), frames
    assert "epoch 1/2 (step 2): train nll 2.5000, val nll 4.5000, test nll 1.7500" in frames[-1]
    assert progress.status() == "loss 2.5000, val nll 4.5000, test nll 1.7500"


def test_a_log_gets_one_line_per_epoch_and_no_frames():
    stream = io.StringIO()
    progress = Progress("bpd", 2, interactive=False, stream=stream)
    run_epoch(progress, 0, [5.0, 4.0, 3.0], test=3.5)
    run_epoch(progress, 1, [2.0], test=2.5)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2 (step 3): train bpd 4.0000, test bpd 3.5000 (")
    assert lines[1].startswith("epoch 2/2 (step 1): train bpd 2.0000, test bpd 2.5000 (")


def test_an_epoch_without_evaluation_still_gets_its_line():
    stream = io.StringIO()
    progress = Progress("nll", 3, interactive=False, stream=stream)
    bar = progress.start_epoch(0, 2, 0, 10)
    progress.loss(1.5)
    bar.update(1)
    bar.close()
    progress.start_epoch(1, 2, 0, 11)
    assert stream.getvalue().startswith("epoch 1/3 (step 11): train nll 1.5000 (")


def test_nothing_is_shown_when_disabled():
    stream = io.StringIO()
    progress = Progress("nll", 1, enabled=False, interactive=False, stream=stream)
    run_epoch(progress, 0, [1.0], test=1.0)
    progress.finish()
    assert stream.getvalue() == ""
