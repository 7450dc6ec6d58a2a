import numpy as np
import pytest

from flowkit.data import DataError, read_idx, read_idx_array, read_idx_dir

from .builders import idx_bytes, random_images, write_bytes


@pytest.mark.parametrize("compress", [False, True])
def test_images_and_labels_round_trip(tmp_path, compress):
    images = random_images(7, 1, 5, 4, seed=0)[:, 0]
    labels = np.arange(7, dtype=np.uint8) % 3
    # Names deliberately say nothing about compression: gzip is found from the bytes.
    image_file = write_bytes(tmp_path / "images.idx3", idx_bytes(images), compress=compress)
    label_file = write_bytes(tmp_path / "labels.gz", idx_bytes(labels), compress=compress)
    data = read_idx(image_file, label_file)
    assert data.images.shape == (7, 1, 5, 4)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert read_idx(image_file).labels is None


@pytest.mark.parametrize(
    ("type_code", "dtype"),
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
def test_every_idx_type_round_trips(tmp_path, type_code, dtype):
    # 7 * k - 50 spans negative values and fits int8; uint8 gets the unshifted range.
    steps = np.arange(24).reshape(2, 3, 4) * 7
    values = (steps if dtype == np.uint8 else steps - 50).astype(dtype)
    path = write_bytes(tmp_path / "values", idx_bytes(values, type_code))
    array = read_idx_array(path)
    assert array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(array, values)


def test_directory_finds_both_splits(tmp_path):
    for prefix, count in (("train", 5), ("t10k", 3)):
        write_bytes(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz",
            idx_bytes(random_images(count, 1, 4, 4, count)[:, 0]),
            compress=True,
        )
        write_bytes(
            tmp_path / f"{prefix}-labels-idx1-ubyte.gz",
            idx_bytes(np.zeros(count, np.uint8)),
            compress=True,
        )
    assert len(read_idx_dir(tmp_path)) == 5
    assert len(read_idx_dir(tmp_path, split="test")) == 3


def test_directory_without_split_files(tmp_path):
    write_bytes(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    with pytest.raises(
        DataError, match=rf"{tmp_path.name}: expected one test images file .* found no"
    ):
        read_idx_dir(tmp_path, split="test")


def test_bad_magic(tmp_path):
    path = write_bytes(tmp_path / "notes.idx", b"Not an idx file at all")
    with pytest.raises(
        DataError,
        match=r"notes\.idx: not an idx file: expected magic bytes 00 00 <type> <ndim>, "
        r"got 4e 6f 74 20",
    ):
        read_idx_array(path)


def test_unknown_type_code(tmp_path):
    path = write_bytes(tmp_path / "odd.idx", bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match=r"odd\.idx: expected an idx type code in .*got 0x07"):
        read_idx_array(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path, compress):
    data = idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5]
    path = write_bytes(tmp_path / "short.idx", data, compress=compress)
    with pytest.raises(
        DataError,
        match=r"short\.idx: truncated payload: header announces shape \(4, 3, 3\) of uint8 "
        r"\(36 bytes\), got 31 bytes",
    ):
        read_idx_array(path)


def test_trailing_bytes(tmp_path):
    path = write_bytes(tmp_path / "long.idx", idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(
        DataError, match=r"long\.idx: trailing bytes after the payload.*got 5 bytes"
    ):
        read_idx_array(path)


def test_truncated_header(tmp_path):
    path = write_bytes(tmp_path / "head.idx", bytes([0, 0, 8, 3, 0, 0, 0, 2]))
    with pytest.raises(
        DataError,
        match=r"head\.idx: truncated header: expected 16 bytes for 3 dimension sizes, got 8",
    ):
        read_idx_array(path)


def test_truncated_gzip_stream(tmp_path):
    path = write_bytes(
        tmp_path / "cut.gz", idx_bytes(random_images(20, 1, 8, 8, 0)[:, 0]), compress=True
    )
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or truncated gzip stream"):
        read_idx_array(path)


def test_label_count_mismatch_names_both_files(tmp_path):
    images = write_bytes(tmp_path / "imgs", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = write_bytes(tmp_path / "lbls", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(
        DataError, match=r"lbls: expected as many labels as images in .*imgs \(3\), got 4"
    ):
        read_idx(images, labels)


def test_swapped_files_are_reported(tmp_path):
    images = write_bytes(tmp_path / "imgs", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = write_bytes(tmp_path / "lbls", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(
        DataError, match=r"lbls: expected idx3 images .* got uint8 with shape \(3,\)"
    ):
        read_idx(labels, images)
    with pytest.raises(
        DataError, match=r"imgs: expected idx1 labels .* got uint8 with shape \(3, 2, 2\)"
    ):
        read_idx(images, images)


def write_emnist_subset(folder, subset, upright):
    """EMNIST's names, with images stored transposed as EMNIST stores them."""
    for split, images in (("train", upright), ("test", upright[:1])):
        stored = images.transpose(0, 2, 1)
        write_bytes(
            folder / f"emnist-{subset}-{split}-images-idx3-ubyte.gz",
            idx_bytes(stored),
            compress=True,
        )
        labels = np.arange(len(images), dtype=np.uint8)
        write_bytes(
            folder / f"emnist-{subset}-{split}-labels-idx1-ubyte.gz",
            idx_bytes(labels),
            compress=True,
        )


def test_emnist_subsets_are_read_upright(tmp_path):
    # Not symmetric: a transposed read would differ.
    upright = np.arange(3 * 2 * 5, dtype=np.uint8).reshape(3, 2, 5)
    write_emnist_subset(tmp_path, "balanced", upright)
    write_emnist_subset(tmp_path, "digits", upright[:2] + 100)
    data = read_idx_dir(tmp_path, subset="emnist-balanced")
    assert data.images.shape == (3, 1, 2, 5)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), upright)
    test = read_idx_dir(tmp_path, split="test", subset="emnist-digits")
    np.testing.assert_array_equal(test.images[:, 0].numpy(), upright[:1] + 100)
    with pytest.raises(DataError, match=r"holds 2 idx datasets \(emnist-balanced, emnist-digits"):
        read_idx_dir(tmp_path)
    with pytest.raises(
        DataError, match=r"subset 'emnist-letters', found emnist-balanced, emnist-digits"
    ):
        read_idx_dir(tmp_path, subset="emnist-letters")


def test_mnist_names_are_not_transposed(tmp_path):
    upright = np.arange(2 * 2 * 5, dtype=np.uint8).reshape(2, 2, 5)
    write_bytes(tmp_path / "train-images-idx3-ubyte", idx_bytes(upright))
    np.testing.assert_array_equal(read_idx_dir(tmp_path).images[:, 0].numpy(), upright)
