"""load_image_splits: the images a run trains and is tested on, read again from what it records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from flowkit.data import load_dataset
from flowkit.train.data import load_image_splits
from tests.data.builders import write_image

SOURCE = "fashion-mnist-small"


def _contents(*parts) -> Counter:
    return Counter(bytes(image.numpy()) for part in parts for image in part.images)


def test_held_out_images_split_the_training_images_and_read_back_alone_the_same():
    train, test = load_image_splits(SOURCE, test_fraction=0.1, seed=3)
    (test_again,) = load_image_splits(SOURCE, ("test",), test_fraction=0.1, seed=3)
    (train_again,) = load_image_splits(SOURCE, ("train",), test_fraction=0.1, seed=3)
    whole = load_dataset(SOURCE, split="train")
    assert torch.equal(test_again.images, test.images)
    assert torch.equal(train_again.images, train.images)
    assert len(test) == round(0.1 * len(whole))
    assert _contents(train, test) == _contents(whole)
    (other_seed,) = load_image_splits(SOURCE, ("test",), test_fraction=0.1, seed=4)
    assert not torch.equal(other_seed.images, test.images)


def test_a_test_source_gives_its_test_split_or_all_its_images(tmp_path: Path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "unsplit"
    for index in range(3):
        write_image(folder / f"{index}.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
    train, test = load_image_splits(SOURCE, test_source=str(folder), test_split="all")
    assert torch.equal(train.images, load_dataset(SOURCE, split="train").images)
    assert test.images.shape[0] == 3
    # Records written before the test split was recorded: a source without one counts whole.
    (unrecorded,) = load_image_splits(SOURCE, ("test",), test_source=str(folder))
    assert torch.equal(unrecorded.images, test.images)
    (own_test,) = load_image_splits("unused", ("test",), test_source=SOURCE, test_split="test")
    assert torch.equal(own_test.images, load_dataset(SOURCE, split="test").images)


def test_padding_surrounds_each_image_with_zeros():
    (plain,) = load_image_splits(SOURCE, ("test",))
    (padded,) = load_image_splits(SOURCE, ("test",), pad=2)
    assert padded.images.shape[-2:] == (32, 32)
    assert torch.equal(padded.images[..., 2:-2, 2:-2], plain.images)
    border = padded.images.clone()
    border[..., 2:-2, 2:-2] = 0
    assert not bool(border.any())
