import pytest
import torch

from flowkit.data import ImageData
from flowkit.presets.glow import GlowConfig, build_glow, config_dict
from flowkit.train import TrainConfig


def blob_images(count: int, seed: int, size: int = 8) -> ImageData:
    """Grey images with one bright square each; the label is the quadrant of the square."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 40, (count, 1, size, size), generator=generator, dtype=torch.uint8)
    half = size // 2
    labels = torch.randint(0, 4, (count,), generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, col = (label // 2) * half, (label % 2) * half
        images[index, 0, row : row + half - 1, col : col + half - 1] = 200
    return ImageData(images, labels, f"blobs(seed={seed})")


@pytest.fixture
def blobs():
    return blob_images(96, seed=0), blob_images(32, seed=1)


@pytest.fixture
def tiny_model_config():
    return GlowConfig(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16, seed=0)


def make_trainer(model_config, train, test, output, **overrides):
    from flowkit.train import Trainer

    settings = dict(
        output=str(output),
        batch_size=16,
        test_batch_size=32,
        init_batch_size=32,
        epochs=2,
        lr=5e-3,
        warmup_epochs=0.5,
        progress=False,
        log_every=1,
        num_samples=8,
        temperatures=(0.0, 0.7),
        device="cpu",
    )
    settings.update(overrides)
    torch.manual_seed(0)
    flow = build_glow(model_config)
    return Trainer(
        flow, TrainConfig(**settings), train, test, model_config=config_dict(model_config)
    )
