"""The trainer drops a class-conditional TarFlow's labels once per example, and resumes exactly."""

from __future__ import annotations

import torch

from flowkit.presets import TarFlowConfig, build_tarflow
from flowkit.train import TrainConfig, Trainer, load_checkpoint
from tests.train.conftest import blob_images


def _trainer(output, label_dropout: float, **overrides) -> Trainer:
    config = TarFlowConfig(
        input_shape=(1, 8, 8),
        patch_size=4,
        channels=8,
        blocks=2,
        layers_per_block=1,
        heads=2,
        num_classes=4,
        label_dropout=label_dropout,
        seed=0,
    )
    settings = dict(
        output=str(output),
        batch_size=16,
        test_batch_size=32,
        epochs=1,
        lr=5e-3,
        progress=False,
        num_samples=4,
        temperatures=(0.7,),
        device="cpu",
    )
    settings.update(overrides)
    return Trainer(
        build_tarflow(config),
        TrainConfig(**settings),
        blob_images(64, seed=0),
        blob_images(32, seed=1),
        model_config=config,
    )


def test_label_dropout_is_drawn_by_the_trainer_and_a_resumed_run_is_exact(tmp_path) -> None:
    whole = _trainer(tmp_path / "whole", 0.5).fit()
    first = _trainer(tmp_path / "split", 0.5, max_steps=2).fit()
    second = _trainer(tmp_path / "split", 0.5).fit(resume=True)
    assert first.train_losses + second.train_losses == whole.train_losses
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    # The drops change what is learned: without them the same run ends elsewhere.
    _trainer(tmp_path / "kept", 0.0).fit()
    c = load_checkpoint(tmp_path / "kept" / "checkpoint.pt")["model"]
    assert not all(torch.equal(a[key], c[key]) for key in a)
