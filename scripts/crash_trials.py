"""Interrupt training at random moments (Ctrl-C, SIGKILL), resume, compare with an unbroken run.

Usage:
    python scripts/crash_trials.py --trials 50 [--seed 0] [--workdir DIR]

Each trial trains a tiny Glow on synthetic images in a child process and interrupts it at a
random moment: SIGINT (Ctrl-C) or SIGKILL after a random training step, or in the middle of a
random checkpoint write. The child signals itself at that moment, so a trial is the same on every
machine and under any load. The run is resumed with ``resume=True`` until it finishes (further
interruptions included), and the final weights, the averaged weights, the optimizer state and
metrics.jsonl (without its wall-clock column) must equal those of one uninterrupted run, bit for
bit. The child computes with one thread. Prints one line per trial and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


# The tiny run: 8 steps per epoch, 3 epochs; a checkpoint every other step and at epoch ends.
TOTAL_STEPS = 24
CHECKPOINT_WRITES = 15


def _interrupt(moment: str) -> None:
    """Arrange for the child to signal itself at ``moment``: ``step:N:SIG`` or ``save:N:SIG``."""
    import flowkit.train.checkpoint as checkpoint
    import flowkit.train.objectives as objectives

    kind, count, name = moment.split(":")
    target, signum = int(count), getattr(signal, name)
    calls = {"n": 0}
    if kind == "step":
        original = objectives.Objective.__call__

        def counted(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if torch_grad_enabled():
                calls["n"] += 1
                if calls["n"] == target:
                    os.kill(os.getpid(), signum)
            return out

        objectives.Objective.__call__ = counted
    else:
        real_save = checkpoint.torch.save

        def dying_save(state, stream, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == target:
                stream.write(b"half a checkpoint")
                stream.flush()
                os.kill(os.getpid(), signum)
            return real_save(state, stream, *args, **kwargs)

        checkpoint.torch.save = dying_save


def torch_grad_enabled() -> bool:
    """Whether autograd records (training passes do; evaluation does not)."""
    import torch

    return torch.is_grad_enabled()


def train(output: str, resume: bool, moment: str | None = None) -> None:
    """The child: a tiny run that checkpoints every other step (so kills land in writes too)."""
    if moment:
        _interrupt(moment)
    import torch

    from flowkit.data import ImageData
    from flowkit.presets import GlowConfig, build_glow
    from flowkit.train import TrainConfig, Trainer, TrainingInterrupted

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (160, 1, 8, 8), generator=generator, dtype=torch.uint8)
    train_data = ImageData(images[:128], None, "synthetic")
    test_data = ImageData(images[128:], None, "synthetic")
    model = GlowConfig(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16, seed=0)
    config = TrainConfig(
        output=output,
        batch_size=16,
        test_batch_size=32,
        init_batch_size=32,
        epochs=3,
        lr=3e-3,
        warmup_epochs=0.5,
        checkpoint_every=2,
        log_every=1,
        num_samples=4,
        temperatures=(0.7,),
        progress=False,
        device="cpu",
    )
    trainer = Trainer(
        build_glow(model), config, train_data, test_data, model_name="glow", model_config=model
    )
    try:
        trainer.fit(resume=resume)
    except TrainingInterrupted:
        sys.exit(130)


def _run_child(output: Path, resume: bool, moment: str | None) -> int:
    command = [sys.executable, __file__, "--child", str(output)]
    command += (["--resume"] if resume else []) + (["--at", moment] if moment else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = process.communicate()
    if process.returncode not in (0, 130, -signal.SIGKILL, -signal.SIGINT):
        raise RuntimeError(f"training failed ({process.returncode}): {stderr.decode()[-2000:]}")
    return process.returncode


def _fingerprint(output: Path) -> tuple[dict, list]:
    import torch

    state = torch.load(output / "checkpoint.pt", weights_only=True)
    tensors = {
        "model": state["model"],
        "ema": state["ema"],
        "optimizer": state["optimizer"]["state"],
    }
    metrics = [
        {key: value for key, value in json.loads(line).items() if key != "time"}
        for line in (output / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return tensors, metrics


def _equal(a: object, b: object) -> bool:
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


def main(argv: list[str] | None = None) -> int:
    """Run the trials; return 0 if every one matched the unbroken run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="number of interrupted runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the delays and signals")
    parser.add_argument("--workdir", help="where runs go (default: a temporary directory)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--at", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        train(args.child, args.resume, args.at)
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="flowkit-crash-"))
    _run_child(workdir / "reference", resume=False, moment=None)
    expected = _fingerprint(workdir / "reference")
    chooser = random.Random(args.seed)
    failures = 0
    for trial in range(args.trials):
        output = workdir / f"trial{trial:03d}"
        interruptions: list[str] = []
        while True:
            moment = None
            if len(interruptions) < 3:
                kind = chooser.choice(["step", "save"])
                count = chooser.randint(1, TOTAL_STEPS if kind == "step" else CHECKPOINT_WRITES)
                moment = f"{kind}:{count}:{chooser.choice(['SIGINT', 'SIGKILL'])}"
            code = _run_child(output, resume=bool(interruptions), moment=moment)
            if code == 0:
                break
            interruptions.append(str(moment))
        same = _equal(_fingerprint(output), expected)
        failures += not same
        history = ", ".join(interruptions) or "no interruption"
        print(f"trial {trial}: {'same' if same else 'DIFFERENT'} after {history}")
    print(f"{args.trials - failures} of {args.trials} trials matched the uninterrupted run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
