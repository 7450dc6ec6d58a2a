"""Shared bits of the example scripts: a quick checkpoint for the --quick smoke runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flowkit.data import load_dataset
from flowkit.presets.glow import GlowConfig, build_glow, config_dict
from flowkit.train import TrainConfig, Trainer


def quick_checkpoint(num_classes: int | None = None) -> Path:
    """Train a tiny Glow on 256 bundled images for a few steps; return its checkpoint path."""
    output = Path(tempfile.mkdtemp(prefix="flowkit-example-"))
    model = GlowConfig(
        K=1, L=2, input_shape=(1, 28, 28), hidden_channels=8, num_classes=num_classes
    )
    train = TrainConfig(
        data="fashion-mnist-small",
        output=str(output),
        batch_size=32,
        epochs=1,
        num_train=256,
        num_test=64,
        init_batch_size=64,
        progress=False,
        temperatures=(0.7,),
        num_samples=8,
    )
    data = load_dataset(train.data, split="train"), load_dataset(train.data, split="test")
    Trainer(build_glow(model), train, *data, model_config=config_dict(model)).fit()
    return output / "checkpoint.pt"
