import numpy as np
import pytest

from flowkit.data import DataError, read_imagenet_npz

from .builders import imagenet_rows, random_images


def write_batch(path, images, labels, **extra):
    np.savez(path, data=imagenet_rows(images), labels=np.asarray(labels), **extra)
    return path


@pytest.mark.parametrize("side", [32, 64])
def test_single_file_round_trip(tmp_path, side):
    images = random_images(3, 3, side, side, seed=side)
    labels = [1, 1000, 17]  # 1-based, as published
    path = write_batch(tmp_path / "val_data.npz", images, labels, mean=np.zeros(3))
    data = read_imagenet_npz(path)
    np.testing.assert_array_equal(data.images.numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), [0, 999, 16])


def test_planes_are_channel_major(tmp_path):
    # One image whose row is 32*32 values of 5, then of 6, then of 7: channels 0, 1, 2.
    row = np.repeat(np.array([5, 6, 7], np.uint8), 32 * 32)[None]
    path = tmp_path / "one.npz"
    np.savez(path, data=row, labels=np.array([3]))
    data = read_imagenet_npz(path)
    assert [int(data.images[0, c].unique()) for c in range(3)] == [5, 6, 7]


def test_directory_orders_batches_numerically_and_finds_val(tmp_path):
    batches = {k: random_images(2, 3, 32, 32, seed=k) for k in (1, 2, 10)}
    for k, images in batches.items():
        write_batch(tmp_path / f"train_data_batch_{k}.npz", images, [k, k])
    val_images = random_images(4, 3, 32, 32, seed=99)
    write_batch(tmp_path / "val_data.npz", val_images, [5, 6, 7, 8])
    train = read_imagenet_npz(tmp_path, split="train")
    expected = np.concatenate([batches[1], batches[2], batches[10]])
    np.testing.assert_array_equal(train.images.numpy(), expected)
    np.testing.assert_array_equal(train.labels.numpy(), [0, 0, 1, 1, 9, 9])
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            read_imagenet_npz(tmp_path, split=split).images.numpy(), val_images
        )


def test_zero_based_labels_are_rejected(tmp_path):
    path = write_batch(tmp_path / "b.npz", random_images(2, 3, 32, 32, 0), [0, 4])
    with pytest.raises(
        DataError, match=r"b\.npz: expected 1-based labels in \[1, 1000\], got values in \[0, 4\]"
    ):
        read_imagenet_npz(path)


def test_label_count_mismatch(tmp_path):
    path = write_batch(tmp_path / "b.npz", random_images(3, 3, 32, 32, 0), [1, 2])
    with pytest.raises(DataError, match=r"b\.npz: expected as many labels as images \(3\), got 2"):
        read_imagenet_npz(path)


def test_missing_key(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, data=np.zeros((1, 3072), np.uint8))
    with pytest.raises(
        DataError, match=r"b\.npz: expected arrays 'data' and 'labels', missing labels"
    ):
        read_imagenet_npz(path)


def test_rows_that_are_not_square_images(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, data=np.zeros((1, 3000), np.uint8), labels=np.array([1]))
    with pytest.raises(
        DataError, match=r"b\.npz: expected 'data' rows of 3\*S\*S values .* got 3000"
    ):
        read_imagenet_npz(path)


def test_truncated_file(tmp_path):
    path = write_batch(tmp_path / "b.npz", random_images(2, 3, 32, 32, 0), [1, 2])
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"b\.npz: not a readable npz file"):
        read_imagenet_npz(path)


def test_pickled_labels_are_not_loaded(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, data=np.zeros((1, 3072), np.uint8), labels=np.array([1], dtype=object))
    with pytest.raises(DataError, match=r"b\.npz: corrupt npz member .*allow_pickle"):
        read_imagenet_npz(path)


def test_batches_of_different_sizes(tmp_path):
    write_batch(tmp_path / "train_data_batch_1.npz", random_images(1, 3, 32, 32, 0), [1])
    write_batch(tmp_path / "train_data_batch_2.npz", random_images(1, 3, 64, 64, 0), [1])
    with pytest.raises(
        DataError, match=r"expected batches of one image size, got sizes \[32, 64\]"
    ):
        read_imagenet_npz(tmp_path)


def test_missing_split_files(tmp_path):
    with pytest.raises(DataError, match=r"expected val_data\.npz for split 'test'"):
        read_imagenet_npz(tmp_path, split="test")
    with pytest.raises(DataError, match=r"expected train_data_batch_<k>\.npz files"):
        read_imagenet_npz(tmp_path, split="train")


def test_imagenet64_parts_and_val_in_the_release_folders(tmp_path):
    # Imagenet64's training set comes as two folders (batches 1..5 and 6..10).
    batches = {k: random_images(1, 3, 8, 8, seed=k) for k in range(1, 11)}
    for k, images in batches.items():
        part = "Imagenet64_train_part1_npz" if k <= 5 else "Imagenet64_train_part2_npz"
        (tmp_path / part).mkdir(exist_ok=True)
        write_batch(tmp_path / part / f"train_data_batch_{k}.npz", images, [k])
    (tmp_path / "Imagenet64_val_npz").mkdir()
    val_images = random_images(2, 3, 8, 8, seed=50)
    write_batch(tmp_path / "Imagenet64_val_npz" / "val_data.npz", val_images, [1, 2])
    train = read_imagenet_npz(tmp_path)
    expected = np.concatenate([batches[k] for k in range(1, 11)])
    np.testing.assert_array_equal(train.images.numpy(), expected)
    np.testing.assert_array_equal(train.labels.numpy(), np.arange(10))
    test = read_imagenet_npz(tmp_path, split="test")
    np.testing.assert_array_equal(test.images.numpy(), val_images)


def test_a_batch_found_twice_is_ambiguous(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_batch(tmp_path / folder / "train_data_batch_1.npz", random_images(1, 3, 8, 8, 0), [1])
    with pytest.raises(DataError, match=r"each training batch once, found a/.* and b/"):
        read_imagenet_npz(tmp_path)
