"""Squeeze has pixel_unshuffle's and official Glow's layout, or TensorFlow's space_to_depth;
Reshape and Flatten are row-major."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from flowkit.bijectors import Flatten, Patchify, Reshape, Squeeze
from flowkit.testing.strategies import image_shapes


def _glow_squeeze2d(x_nhwc: np.ndarray, factor: int) -> np.ndarray:
    """Official Glow's squeeze2d (NHWC), restated in numpy."""
    n, height, width, channels = x_nhwc.shape
    x = x_nhwc.reshape(n, height // factor, factor, width // factor, factor, channels)
    x = x.transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, height // factor, width // factor, channels * factor * factor)


def _loop_squeeze(x: np.ndarray, factor: int) -> np.ndarray:
    """Brute force (NCHW): output channel c * f^2 + i * f + j is channel c at offset (i, j)."""
    n, channels, height, width = x.shape
    out = np.empty((n, channels * factor * factor, height // factor, width // factor), x.dtype)
    for c in range(channels):
        for i in range(factor):
            for j in range(factor):
                out[:, c * factor * factor + i * factor + j] = x[:, c, i::factor, j::factor]
    return out


def _tf_space_to_depth(x_nhwc: np.ndarray, block: int) -> np.ndarray:
    """TensorFlow's space_to_depth (NHWC) as its documentation states it, by reshape/transpose.

    Each ``block x block`` patch becomes the depth of one output position, patch rows outer,
    then patch columns, then input channels: output channel ``(dy * block + dx) * C + c``.
    """
    n, height, width, channels = x_nhwc.shape
    x = x_nhwc.reshape(n, height // block, block, width // block, block, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, height // block, width // block, block * block * channels)


def _loop_space_to_depth(x: np.ndarray, block: int) -> np.ndarray:
    """Brute force (NCHW): output channel (dy * f + dx) * C + c is channel c at offset (dy, dx)."""
    n, channels, height, width = x.shape
    out = np.empty((n, channels * block * block, height // block, width // block), x.dtype)
    for dy in range(block):
        for dx in range(block):
            for c in range(channels):
                out[:, (dy * block + dx) * channels + c] = x[:, c, dy::block, dx::block]
    return out


squeeze_inputs = st.tuples(
    st.sampled_from([1, 2, 3]),
    image_shapes(st.integers(1, 3), min_size=2, max_size=6, multiple_of=1),
).filter(lambda args: args[1][1] % args[0] == 0 and args[1][2] % args[0] == 0)


@given(args=squeeze_inputs)
def test_squeeze_layout(args) -> None:
    factor, event_shape = args
    x = torch.randn((2,) + event_shape, dtype=torch.float64)
    z, log_abs_det = Squeeze(factor)(x)
    assert torch.equal(z, F.pixel_unshuffle(x, factor))
    assert np.array_equal(z.numpy(), _loop_squeeze(x.numpy(), factor))
    glow = _glow_squeeze2d(x.permute(0, 2, 3, 1).numpy(), factor)
    assert np.array_equal(z.permute(0, 2, 3, 1).numpy(), glow)
    assert torch.equal(log_abs_det, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(Squeeze(factor).inverse(z)[0], x)


@given(args=squeeze_inputs)
def test_position_major_squeeze_is_tensorflows_space_to_depth(args) -> None:
    factor, event_shape = args
    x = torch.randn((2,) + event_shape, dtype=torch.float64)
    squeeze = Squeeze(factor, order="position_major")
    z, log_abs_det = squeeze(x)
    reference = _tf_space_to_depth(x.permute(0, 2, 3, 1).numpy(), factor)
    assert np.array_equal(z.permute(0, 2, 3, 1).numpy(), reference)
    assert np.array_equal(z.numpy(), _loop_space_to_depth(x.numpy(), factor))
    assert torch.equal(log_abs_det, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(squeeze.inverse(z)[0], x)


def test_position_major_squeeze_keeps_extra_batch_dimensions_and_refuses_unknown_orders() -> None:
    x = torch.randn(2, 3, 5, 4, 6)
    squeeze = Squeeze(order="position_major")
    z, log_abs_det = squeeze(x)
    assert z.shape == (2, 3, 20, 2, 3) and log_abs_det.shape == (2, 3)
    flat = _tf_space_to_depth(x.flatten(0, 1).permute(0, 2, 3, 1).numpy(), 2)
    assert np.array_equal(z.flatten(0, 1).permute(0, 2, 3, 1).numpy(), flat)
    assert torch.equal(squeeze.inverse(z)[0], x)
    with pytest.raises(ValueError, match="order in .* got 'tensorflow'"):
        Squeeze(order="tensorflow")


def test_squeeze_keeps_extra_batch_dimensions() -> None:
    x = torch.randn(2, 3, 1, 4, 6)
    z, log_abs_det = Squeeze()(x)
    assert z.shape == (2, 3, 4, 2, 3) and log_abs_det.shape == (2, 3)
    assert torch.equal(z.flatten(0, 1), F.pixel_unshuffle(x.flatten(0, 1), 2))
    assert torch.equal(Squeeze().inverse(z)[0], x)


def test_squeeze_shapes() -> None:
    assert Squeeze().forward_shape((7, 3, 8, 4)) == (7, 12, 4, 2)
    assert Squeeze(3).inverse_shape((9, 4, 5)) == (1, 12, 15)


@pytest.mark.parametrize(
    ("in_shape", "out_shape"), [((2, 3), (6,)), ((6,), (3, 2)), ((2, 2, 3), (3, 4))]
)
def test_reshape_is_row_major(in_shape, out_shape) -> None:
    x = torch.arange(2 * int(np.prod(in_shape)), dtype=torch.float64).reshape((2,) + in_shape)
    z, log_abs_det = Reshape(in_shape, out_shape)(x)
    assert np.array_equal(z.numpy(), x.numpy().reshape((2,) + out_shape))
    assert log_abs_det.shape == (2,)
    assert Reshape(in_shape, out_shape).latent_rank == len(out_shape)


def test_flatten() -> None:
    flatten = Flatten((2, 3, 4))
    x = torch.randn(5, 2, 3, 4)
    z, _ = flatten(x)
    assert torch.equal(z, x.reshape(5, 24))
    assert flatten.event_rank == 3 and flatten.latent_rank == 1
    assert flatten.inverse_shape((7, 24)) == (7, 2, 3, 4)


@pytest.mark.parametrize(("patch", "shape"), [(1, (2, 3, 5)), (2, (3, 4, 6)), (4, (1, 8, 4))])
def test_patchify_is_unfold_with_stride_p(patch: int, shape: tuple) -> None:
    x = torch.randn((2,) + shape, dtype=torch.float64)
    bijector = Patchify(patch, image_width=shape[2])
    z, log_abs_det = bijector(x)
    assert torch.equal(z, F.unfold(x, patch, stride=patch).transpose(1, 2))
    # Patch t is row t // (W / p), column t % (W / p) of the patch grid.
    columns = shape[2] // patch
    row, column = divmod(z.shape[1] - 1, columns)
    corner = x[0, :, row * patch : (row + 1) * patch, column * patch : (column + 1) * patch]
    assert torch.equal(z[0, -1], corner.flatten())
    assert torch.equal(log_abs_det, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(bijector.inverse(z)[0], x)


def test_patchify_square_default_and_errors() -> None:
    x = torch.randn(3, 1, 2, 6, 6)
    z, _ = Patchify(3)(x)
    assert z.shape == (3, 1, 4, 18)
    assert torch.equal(Patchify(3).inverse(z)[0], x)
    with pytest.raises(ValueError, match="divisible by the patch size 4"):
        Patchify(4)(torch.randn(1, 1, 6, 8))
    with pytest.raises(ValueError, match="width 8, got width 4"):
        Patchify(2, image_width=8)(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="square number of patches"):
        Patchify(2).inverse(torch.randn(1, 6, 4))
    with pytest.raises(ValueError, match="patch_size"):
        Patchify(0)
    with pytest.raises(ValueError, match="image_width"):
        Patchify(2, image_width=5)
