import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from flowkit.data import augment_images, random_flip, random_shift
from flowkit.data.augment import _shift_axis


def _images(count=5, seed=0, size=(3, 9, 7)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *size), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("fraction", [0.1, 0.35])
def test_random_shift_is_keras_shift_bilinear_nearest_then_floor(fraction):
    # Keras' ImageDataGenerator shifts with scipy.ndimage (order 1, mode "nearest"); the official
    # loader floors the result. Redraw the same offsets and compare image by image.
    images = _images()
    shifted = random_shift(images, fraction, torch.Generator().manual_seed(3))
    offsets = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    offsets = (offsets * 2 - 1) * fraction * torch.tensor([9.0, 7.0], dtype=torch.float64)
    for index in range(5):
        for channel in range(3):
            reference = ndimage.shift(
                images[index, channel].numpy().astype(np.float64),
                (-float(offsets[index, 0]), -float(offsets[index, 1])),
                order=1,
                mode="nearest",
            )
            expected = np.clip(np.floor(reference + 1e-4), 0, 255)
            np.testing.assert_array_equal(shifted[index, channel].numpy(), expected)


def test_random_shift_offsets_stay_within_the_fraction():
    # A one-hot image moves by at most fraction * size pixels along each axis.
    image = torch.zeros(400, 1, 21, 21, dtype=torch.uint8)
    image[:, 0, 10, 10] = 255
    shifted = random_shift(image, 0.1, torch.Generator().manual_seed(0))
    rows = torch.arange(21.0).view(1, 21, 1)
    cols = torch.arange(21.0).view(1, 1, 21)
    mass = shifted[:, 0].double()
    centre_row = (mass * rows).sum((1, 2)) / mass.sum((1, 2))
    centre_col = (mass * cols).sum((1, 2)) / mass.sum((1, 2))
    assert (centre_row - 10).abs().max() <= 2.1 + 1e-6
    assert (centre_col - 10).abs().max() <= 2.1 + 1e-6
    # ... and the offsets do spread over that range, in both directions.
    assert (centre_row - 10).min() < -1.5 and (centre_row - 10).max() > 1.5


def test_whole_pixel_shifts_move_images_exactly():
    values = _images(2).double()
    moved = _shift_axis(values, torch.tensor([2.0, -1.0], dtype=torch.float64), 3)
    assert torch.equal(moved[0, :, :, :5], values[0, :, :, 2:])
    assert torch.equal(moved[0, :, :, 5:], values[0, :, :, 6:].expand(-1, -1, 2))
    assert torch.equal(moved[1, :, :, 1:], values[1, :, :, :-1])


def test_random_flip_mirrors_about_half_of_the_images():
    images = _images(200, size=(1, 4, 5))
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    count = int(mirrored.sum())
    assert abs(count - 100) < 4 * math.sqrt(50)


def test_augment_images_draws_nothing_when_off():
    generator = torch.Generator().manual_seed(0)
    images = _images()
    assert torch.equal(augment_images(images, generator=generator), images)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())


@pytest.mark.parametrize(
    ("images", "fraction", "message"),
    [
        (torch.zeros(2, 1, 4, 4), 0.1, "uint8 images"),
        (torch.zeros(1, 4, 4, dtype=torch.uint8), 0.1, r"\(N, C, H, W\)"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1.5, r"fraction in \[0, 1\)"),
    ],
)
def test_bad_inputs_are_named(images, fraction, message):
    with pytest.raises(ValueError, match=message):
        random_shift(images, fraction)
