"""Training-time augmentation, training noise and the weight average's warm-up."""

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from flowkit.train import ConfigError, TrainConfig
from flowkit.train.distributed import Process
from flowkit.train.trainer import _warmed_up_average

from .conftest import make_trainer

CPU = Process()


def _batch(trainer, seed=0):
    """Levels, dequantisation noise, labels and training noise of one batch."""
    index = torch.arange(64)
    return trainer.train_data.batch(index, torch.Generator().manual_seed(seed), CPU)


def test_augmentation_and_noise_reach_training_batches_only(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    plain = make_trainer(tiny_model_config, train, test, tmp_path / "a")
    augmented = make_trainer(
        tiny_model_config, train, test, tmp_path / "b", augment_shift=0.3, noise_std=0.05
    )
    (levels, _, _, none), (shifted, _, _, gaussian) = _batch(plain), _batch(augmented)
    assert not torch.equal(levels, shifted)
    assert none is None and gaussian.shape == levels.shape
    assert float(gaussian.std()) == pytest.approx(0.05, rel=0.05)
    # Evaluation sees neither: the test value is the same for both settings.
    flow = augmented.flow.eval()
    assert plain.evaluate(flow) == augmented.evaluate(flow)


def test_shift_augmentation_moves_the_training_images(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, augment_shift=0.3)
    shifted = _batch(trainer)[0]
    reference = make_trainer(tiny_model_config, train, test, tmp_path / "plain")
    original = _batch(reference)[0]
    # Shifted images differ from the originals somewhere in nearly all of them (how they are
    # shifted is tested against scipy in tests/data/test_augment.py).
    moved = (shifted != original).flatten(1).any(1)
    assert int(moved.sum()) >= 56


def test_augmenting_vectors_is_refused():
    from flowkit.presets import nsf
    from flowkit.train import Trainer

    config = TrainConfig(output="unused", augment_shift=0.1, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="augment_shift and augment_flip apply to images"):
        Trainer(nsf(2), config, torch.randn(64, 2))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("augment_shift", 1.0, "augment_shift"),
        ("augment_shift", -0.1, "augment_shift"),
        ("noise_std", -1.0, "noise_std"),
        ("augment_flip", 1, "augment_flip as true or false"),
        ("ema_warmup", "yes", "ema_warmup as true or false"),
    ],
)
def test_bad_perturbation_settings_are_named(name, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{name: value})


def _average_of(weights, multi_avg_fn):
    module = nn.Linear(1, 1, bias=False)
    average = AveragedModel(module, multi_avg_fn=multi_avg_fn, use_buffers=False)
    for value in weights:
        module.weight.data.fill_(value)
        average.update_parameters(module)
    return float(average.module.weight.detach())


def test_the_warmed_up_average_follows_its_schedule():
    weights = torch.randn(300, generator=torch.Generator().manual_seed(0)).double().tolist()
    decay = 0.99
    expected = weights[0]
    for n, value in enumerate(weights[1:], start=1):
        rate = min(decay, (1 + n) / (10 + n))
        expected = rate * expected + (1 - rate) * value
    assert _average_of(weights, _warmed_up_average(decay)) == pytest.approx(expected, rel=1e-5)
    # Late in a run the schedule has reached the constant decay: the same update as torch's.
    late = [
        _average_of([0.0] * 2000 + [1.0], fn)
        for fn in (_warmed_up_average(decay), get_ema_multi_avg_fn(decay))
    ]
    assert late[0] == pytest.approx(late[1], rel=1e-6)


def test_the_warm_up_shortens_the_average_lag_of_a_short_run():
    # Weights moving steadily: the constant-decay average lags by about 1 / (1 - decay) steps,
    # the warmed-up one by about n / 10 + 1 steps early on.
    weights = [float(step) for step in range(300)]
    decay = 1 - 1 / 500
    lag_constant = weights[-1] - _average_of(weights, get_ema_multi_avg_fn(decay))
    lag_warmed = weights[-1] - _average_of(weights, _warmed_up_average(decay))
    assert lag_warmed < 40 < 100 < lag_constant


def _tarflow_trainer(tmp_path, blobs, model_noise, train_noise):
    from flowkit.presets import tarflow
    from flowkit.train import Trainer

    tiny = dict(channels=8, blocks=1, layers_per_block=1, heads=2, seed=0)
    flow = tarflow((1, 8, 8), 4, noise_std=model_noise, **tiny)
    config = TrainConfig(
        output=str(tmp_path), batch_size=16, progress=False, device="cpu", noise_std=train_noise
    )
    return Trainer(flow, config, *blobs)


@pytest.mark.parametrize("train_noise", [0.0, 0.015], ids=["unset", "equal"])
def test_tarflow_trains_with_the_noise_it_denoises_with(blobs, tmp_path, train_noise):
    # 0.03 in TarFlow's range [-1, 1] is 0.015 in flowkit's [-1/2, 1/2], where noise is added.
    trainer = _tarflow_trainer(tmp_path, blobs, 0.03, train_noise)
    assert trainer.train_data.noise_std == trainer.flow.noise_std == 0.015
    *_, noise = _batch(trainer)
    assert float(noise.std()) == pytest.approx(0.015, rel=0.05)


@pytest.mark.parametrize("model_noise", [0.0, 0.03])
def test_a_training_noise_the_model_does_not_denoise_with_is_refused(blobs, tmp_path, model_noise):
    with pytest.raises(
        ConfigError, match=f"noise_std=0.05 .*TarFlowFlow model \\({model_noise / 2}\\)"
    ):
        _tarflow_trainer(tmp_path, blobs, model_noise, 0.05)
