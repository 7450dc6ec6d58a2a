import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.data import make_grid, save_image_grid


def constant_images(count, channels, height, width):
    """Image i is filled with the value 10 * (i + 1) (channel c adds c)."""
    values = 10 * (torch.arange(count) + 1)[:, None] + torch.arange(channels)[None]
    return values[:, :, None, None].expand(count, channels, height, width).to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_layout_and_padding(channels):
    images = constant_images(5, channels, 4, 3)
    grid = make_grid(images, nrow=3, padding=2, pad_value=7)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (3 + 2) + 2, channels)
    assert grid.dtype == np.uint8
    covered = np.zeros(grid.shape[:2], bool)
    for index in range(5):
        row, column = divmod(index, 3)
        top, left = 2 + row * 6, 2 + column * 5
        cell = grid[top : top + 4, left : left + 3]
        np.testing.assert_array_equal(cell, images[index].permute(1, 2, 0).numpy())
        covered[top : top + 4, left : left + 3] = True
    assert (grid[~covered] == 7).all()  # padding and the empty sixth cell


def test_default_grid_is_near_square_and_accepts_numpy():
    images = constant_images(10, 3, 2, 2).numpy()
    grid = make_grid(images, padding=0)
    assert grid.shape == (3 * 2, 4 * 2, 3)  # ceil(sqrt(10)) = 4 per row, 3 rows
    assert make_grid(images, nrow=20, padding=0).shape == (2, 10 * 2, 3)


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_saved_png_holds_the_grid(tmp_path, channels, mode):
    images = constant_images(4, channels, 5, 5)
    path = save_image_grid(images, tmp_path / "nested" / "grid.png", nrow=2)
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == mode
        pixels = np.asarray(saved)
    expected = make_grid(images, nrow=2)
    np.testing.assert_array_equal(pixels, expected[..., 0] if channels == 1 else expected)


def test_argument_checks():
    with pytest.raises(
        TypeError, match=r"make_grid expects uint8 images, got torch.float32; .*to_uint8"
    ):
        make_grid(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"C in \(1, 3\), got \(1, 2, 2, 2\)"):
        make_grid(torch.zeros(1, 2, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"N >= 1 .*got \(0, 3, 2, 2\)"):
        make_grid(torch.zeros(0, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="nrow as a positive int, got 0"):
        make_grid(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), nrow=0)
    with pytest.raises(ValueError, match="pad_value as an int in 0..255, got 256"):
        make_grid(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), pad_value=256)
