import numpy as np
import pytest
import torch
from scipy import stats

from flowkit.data import n_bins, reduce_bits, to_model_input, to_uint8

ALL_VALUES = torch.arange(256, dtype=torch.uint8)
BITS = list(range(1, 9))


@pytest.mark.parametrize("n_bits", BITS)
def test_reduce_bits_is_floor_division(n_bits):
    expected = [value // 2 ** (8 - n_bits) for value in range(256)]
    assert reduce_bits(ALL_VALUES, n_bits).tolist() == expected
    assert n_bins(n_bits) == len(set(expected))


@pytest.mark.parametrize("n_bits", BITS)
def test_model_input_without_noise_matches_official_preprocess(n_bits):
    # Glow's preprocess in float64: floor(x / 2**(8 - n)) / 2**n - 0.5.
    official = np.floor(np.arange(256) / 2 ** (8 - n_bits)) / 2**n_bits - 0.5
    got = to_model_input(ALL_VALUES, n_bits, dequantize=False)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.double().numpy(), official)


@pytest.mark.parametrize("n_bits", BITS)
def test_dequantized_values_stay_in_their_bin(n_bits):
    # Many draws for every uint8 value, so noise close to a whole bin width does occur.
    images = ALL_VALUES.repeat(256)
    x = to_model_input(images, n_bits, generator=torch.Generator().manual_seed(n_bits))
    assert x.dtype == torch.float32
    assert float(x.min()) >= -0.5 and float(x.max()) < 0.5
    reduced = reduce_bits(images, n_bits)
    assert torch.equal(torch.floor((x + 0.5) * 2**n_bits).long(), reduced.long())
    assert torch.equal(to_uint8(x, n_bits), (reduced.long() * (256 // 2**n_bits)).to(torch.uint8))


def test_top_bin_never_reaches_one_half():
    # At 255 and 8 bits, float32 rounding of k/B - 1/2 + u would reach 0.5 about once in 10**5.
    images = torch.full((2_000_000,), 255, dtype=torch.uint8)
    x = to_model_input(images, 8, generator=torch.Generator().manual_seed(0))
    assert float(x.max()) < 0.5
    assert torch.equal(torch.floor((x + 0.5) * 256), torch.full_like(x, 255))


@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_noise_is_uniform_over_one_bin(n_bits):
    images = torch.full((20_000,), 200, dtype=torch.uint8)
    x = to_model_input(images, n_bits, generator=torch.Generator().manual_seed(1))
    bins = 2**n_bits
    fraction = ((x.double() + 0.5) * bins - reduce_bits(images, n_bits).double()).numpy()
    assert stats.kstest(fraction, "uniform").pvalue > 1e-3


def test_generator_makes_noise_reproducible():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    first = to_model_input(images, generator=torch.Generator().manual_seed(3))
    again = to_model_input(images, generator=torch.Generator().manual_seed(3))
    other = to_model_input(images, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == images.shape


@pytest.mark.parametrize("n_bits", BITS)
def test_to_uint8_matches_official_postprocess_and_clips(n_bits):
    x = torch.linspace(-1.0, 1.0, 4001, dtype=torch.float64)
    bins = 2**n_bits
    official = np.clip(np.floor((x.numpy() + 0.5) * bins) * (256.0 / bins), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(x, n_bits).numpy(), official)
    assert to_uint8(torch.tensor([float("inf"), -float("inf")]), n_bits).tolist() == [255, 0]


def test_argument_checks():
    with pytest.raises(
        TypeError,
        match=r"reduce_bits expects images of dtype torch.uint8 \(as stored\), got torch.float32",
    ):
        reduce_bits(torch.zeros(2), 8)
    with pytest.raises(
        TypeError, match=r"to_model_input expects images of dtype torch.uint8 .*got torch.int64"
    ):
        to_model_input(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="got ndarray"):
        to_model_input(np.zeros(2, np.uint8))
    with pytest.raises(
        TypeError, match=r"to_uint8 expects a floating-point tensor, got torch.uint8"
    ):
        to_uint8(ALL_VALUES)
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ValueError, match=rf"expects n_bits as an int in 1..8, got {bad!r}"):
            to_model_input(ALL_VALUES, bad)
    with pytest.raises(ValueError, match="n_bits as an int in 1..8, got 0"):
        n_bins(0)
    with pytest.raises(ValueError, match=r"got 1 NaN value\(s\) of 3"):
        to_uint8(torch.tensor([0.0, float("nan"), 0.1]))
