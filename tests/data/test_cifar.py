import pickle
import tarfile
from pathlib import PurePosixPath

import numpy as np
import pytest

from flowkit.data import DataError, read_cifar10, read_cifar100

from .builders import (
    CIFAR10_NAMES,
    add_tar_member,
    cifar_batch,
    make_tar,
    random_images,
    write_cifar10,
    write_cifar100,
    write_pickle,
)


@pytest.mark.parametrize(
    ("bytes_keys", "protocol"), [(True, 2), (False, 4), (False, pickle.HIGHEST_PROTOCOL)]
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_directory_round_trip(tmp_path, bytes_keys, protocol, split):
    expected = write_cifar10(tmp_path, bytes_keys=bytes_keys, protocol=protocol)
    data = read_cifar10(tmp_path / "cifar-10-batches-py", split=split)
    images, labels = expected[split]
    np.testing.assert_array_equal(data.images.numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert data.images.is_contiguous()
    assert data.classes == tuple(CIFAR10_NAMES)


def test_cifar10_reads_parent_directory_and_tarball_alike(tmp_path):
    expected = write_cifar10(tmp_path / "extracted")
    archive = make_tar(tmp_path / "extracted", tmp_path / "cifar-10-python.tar.gz")
    from_parent = read_cifar10(tmp_path / "extracted")
    from_tar = read_cifar10(archive)
    for data in (from_parent, from_tar):
        np.testing.assert_array_equal(data.images.numpy(), expected["train"][0])
        np.testing.assert_array_equal(data.labels.numpy(), expected["train"][1])
    assert from_tar.classes == tuple(CIFAR10_NAMES)


def test_cifar10_pixel_layout_is_rgb_planes(tmp_path):
    # One image whose red plane is 10, green 20, blue 30: rows hold the planes in turn.
    row = np.concatenate([np.full(1024, value, np.uint8) for value in (10, 20, 30)])[None]
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle(folder / "test_batch", {b"data": row, b"labels": [4]})
    data = read_cifar10(folder, split="test")
    assert data.images.shape == (1, 3, 32, 32)
    assert [int(data.images[0, c].unique()) for c in range(3)] == [10, 20, 30]
    assert data.classes is None  # no batches.meta


@pytest.mark.parametrize(("label_kind", "limit"), [("fine", 100), ("coarse", 20)])
def test_cifar100_labels(tmp_path, label_kind, limit):
    expected = write_cifar100(tmp_path / "extracted")
    archive = make_tar(tmp_path / "extracted", tmp_path / "cifar-100-python.tar.gz")
    for source in (tmp_path / "extracted" / "cifar-100-python", archive):
        data = read_cifar100(source, split="test", label_kind=label_kind)
        images, fine, coarse = expected["test"]
        np.testing.assert_array_equal(data.images.numpy(), images)
        np.testing.assert_array_equal(data.labels.numpy(), fine if label_kind == "fine" else coarse)
        assert len(data.classes) == limit
        assert data.classes[3] == f"{label_kind}3"


def test_missing_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        read_cifar10(tmp_path)


def test_truncated_pickle_names_file(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_2: not a readable CIFAR pickle"):
        read_cifar10(tmp_path)


def test_corrupt_member_in_tarball_names_archive_and_member(tmp_path):
    archive = tmp_path / "cifar.tar"
    with tarfile.open(archive, "w") as tar:
        add_tar_member(tar, "cifar-10-batches-py/test_batch", b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"cifar\.tar:cifar-10-batches-py/test_batch"):
        read_cifar10(archive, split="test")


def test_label_count_mismatch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    images = random_images(3, 3, 32, 32, 0)
    write_pickle(folder / "test_batch", cifar_batch(images, {"labels": [1, 2]}, bytes_keys=True))
    with pytest.raises(
        DataError, match=r"test_batch: expected as many labels as images \(3\), got 2"
    ):
        read_cifar10(folder, split="test")


def test_label_out_of_range(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    images = random_images(2, 3, 32, 32, 0)
    write_pickle(folder / "test_batch", cifar_batch(images, {"labels": [1, 10]}, bytes_keys=True))
    with pytest.raises(
        DataError, match=r"test_batch: expected labels >= 0 and < 10, got values in \[1, 10\]"
    ):
        read_cifar10(folder, split="test")


def test_wrong_row_length(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle(folder / "test_batch", {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]})
    with pytest.raises(
        DataError, match=r"test_batch: expected 'data' rows of 3072 bytes .* got 3000"
    ):
        read_cifar10(folder, split="test")


def test_wrong_label_key_for_cifar100(tmp_path):
    write_cifar10(tmp_path)  # CIFAR-10 batch renamed into a CIFAR-100 layout: no fine_labels
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").rename(folder / "test")
    with pytest.raises(DataError, match=r"test: expected a 'fine_labels' entry"):
        read_cifar100(folder, split="test")


def test_pickle_with_foreign_global_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    images = random_images(1, 3, 32, 32, 0)
    batch = cifar_batch(images, {"labels": [0]}, bytes_keys=False)
    batch["extra"] = PurePosixPath("not/allowed")
    write_pickle(folder / "test_batch", batch, protocol=4)
    with pytest.raises(DataError, match=r"test_batch: .*refusing to load global pathlib"):
        read_cifar10(folder, split="test")


def test_non_tar_file_is_reported(tmp_path):
    bogus = tmp_path / "cifar.tar.gz"
    bogus.write_bytes(b"definitely not an archive" * 40)
    with pytest.raises(DataError, match=r"cifar\.tar\.gz: expected a CIFAR directory"):
        read_cifar10(bogus)


def test_argument_checks(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(ValueError, match=r"split in \('train', 'test'\), got 'val'"):
        read_cifar10(tmp_path, split="val")
    with pytest.raises(ValueError, match=r"label_kind 'fine' or 'coarse', got 'medium'"):
        read_cifar100(tmp_path, label_kind="medium")
    with pytest.raises(DataError, match="no such file"):
        read_cifar10(tmp_path / "absent")
