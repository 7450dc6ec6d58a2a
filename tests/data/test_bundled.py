from importlib import resources

import pytest
import torch

from flowkit.data import FASHION_MNIST_CLASSES, load_bundled


@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_shapes_classes_and_balance(split, per_class):
    data = load_bundled(split)
    assert data.images.shape == (10 * per_class, 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.classes == FASHION_MNIST_CLASSES
    assert data.labels.bincount(minlength=10).tolist() == [per_class] * 10
    # Real photographs of clothes: dark background, bright garments, many distinct grey levels.
    assert data.images.float().mean().item() > 30 and data.images.unique().numel() > 200


def test_splits_differ_and_loading_is_deterministic():
    train, test, again = load_bundled("train"), load_bundled("test"), load_bundled("train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert not torch.equal(train.images[:1000], test.images)


def test_license_ships_with_the_data():
    folder = resources.files("flowkit.data").joinpath("bundled")
    text = folder.joinpath("LICENSE-fashion-mnist.txt").read_text()
    assert "Copyright (c) 2017 Zalando SE" in text and "MIT" in text


def test_unknown_split():
    with pytest.raises(
        ValueError, match=r"load_bundled expects split in \('train', 'test'\), got 'val'"
    ):
        load_bundled("val")
