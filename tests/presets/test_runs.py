"""Run presets: the official TarFlow ImageNet 64 recipe and TarFlow's 64-channel heads."""

import pytest
import torch

from flowkit.presets.registry import config_from_dict
from flowkit.presets.runs import RUN_PRESETS, augmentation_of
from flowkit.presets.tarflow import TarFlowConfig
from flowkit.train import TrainConfig
from flowkit.train.schedule import LearningRateSchedule, build_optimizer


def test_tarflow_imagenet64_trains_as_the_official_run():
    preset = RUN_PRESETS["tarflow-imagenet64"]
    config = TrainConfig(**preset.train)
    assert (config.optimizer, config.beta1, config.beta2) == ("adamw", 0.9, 0.95)
    assert config.weight_decay == 1e-4 and config.augment_flip and not config.ema
    assert "horizontal flips" in augmentation_of(preset)
    # ImageNet 64's 1,281,167 training images in batches of 256.
    steps_per_epoch = 1_281_167 // 256
    schedule = LearningRateSchedule.from_config(config, steps_per_epoch)
    last = config.epochs * steps_per_epoch
    # One epoch of warm-up to 1e-4, then a cosine to the official floor of 1e-6 at the last step.
    assert schedule(steps_per_epoch // 2) == pytest.approx(0.5e-4, rel=1e-3)
    assert schedule(steps_per_epoch) == 1e-4
    assert schedule((steps_per_epoch + last) // 2) == pytest.approx((1e-4 + 1e-6) / 2, rel=1e-5)
    assert schedule(last) == pytest.approx(1e-6)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config, steps_per_epoch)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", ["tarflow-small", "tarflow-imagenet64"])
def test_tarflow_presets_use_heads_of_64_channels(name):
    config = config_from_dict("tarflow", RUN_PRESETS[name].model)
    assert config.channels // config.heads == 64


@pytest.mark.parametrize(
    ("channels", "heads"),
    [(768, 12), (64, 1), (1024, 16), (160, 2), (200, 2), (96, 1), (16, 1)],
)
def test_tarflow_heads_default_to_64_channels_or_the_nearest_wider_divisor(channels, heads):
    config = TarFlowConfig(
        input_shape=(1, 4, 4), patch_size=2, channels=channels, blocks=1, layers_per_block=1
    )
    assert config.heads == heads
    assert channels % config.heads == 0 and (channels // config.heads >= 64 or heads == 1)
    # Resolved in the config, so a recorded config compares equal to one naming its heads.
    assert config == TarFlowConfig(
        input_shape=(1, 4, 4),
        patch_size=2,
        channels=channels,
        blocks=1,
        layers_per_block=1,
        heads=heads,
    )
