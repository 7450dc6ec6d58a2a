import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from flowkit.data import make_grid, save_image_grid


def constant_images(count, channels, height, width):
    """Image i is filled with the value 10 * (i + 1) (channel c adds c)."""
    values = 10 * (torch.arange(count) + 1)[:, None] + torch.arange(channels)[None]
    return values[:, :, None, None].expand(count, channels, height, width).to(torch.uint8)


@given(
    count=st.integers(1, 7),
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    nrow=st.integers(1, 8),
    padding=st.integers(0, 3),
    pad_value=st.integers(0, 255),
)
@example(count=5, channels=3, height=4, width=3, nrow=3, padding=2, pad_value=7)
def test_layout_and_padding(count, channels, height, width, nrow, padding, pad_value):
    images = constant_images(count, channels, height, width)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    columns = min(nrow, count)
    rows = -(-count // columns)
    assert grid.dtype == np.uint8
    assert grid.shape == (
        rows * (height + padding) + padding,
        columns * (width + padding) + padding,
        channels,
    )
    covered = np.zeros(grid.shape[:2], bool)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        cell = grid[top : top + height, left : left + width]
        np.testing.assert_array_equal(cell, images[index].permute(1, 2, 0).numpy())
        covered[top : top + height, left : left + width] = True
    assert (grid[~covered] == pad_value).all()  # padding and the empty cells of the last row


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
