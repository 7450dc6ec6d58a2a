import tarfile

import numpy as np
import pytest
import torch

from flowkit.data import DataError, load_bundled, load_dataset
from flowkit.data.loading import dataset_splits, has_test_split, same_source

from .builders import (
    add_tar_member,
    encode_image,
    idx_bytes,
    imagenet_rows,
    make_tar,
    random_images,
    write_bytes,
    write_cifar10,
    write_cifar100,
    write_image,
)


def test_bundled_by_name():
    data = load_dataset("fashion-mnist-small", split="test")
    assert torch.equal(data.images, load_bundled("test").images)


def test_cifar10_directory_parent_and_tar_by_content(tmp_path):
    expected = write_cifar10(tmp_path / "tree")
    archive = make_tar(tmp_path / "tree", tmp_path / "download.bin")  # the name says nothing
    for spec in (tmp_path / "tree", tmp_path / "tree" / "cifar-10-batches-py", archive):
        data = load_dataset(spec, split="test")
        np.testing.assert_array_equal(data.images.numpy(), expected["test"][0])


def test_cifar100_with_options(tmp_path):
    expected = write_cifar100(tmp_path)
    data = load_dataset(str(tmp_path / "cifar-100-python"), label_kind="coarse")
    np.testing.assert_array_equal(data.labels.numpy(), expected["train"][2])


def test_idx_directory_and_single_file(tmp_path):
    images = random_images(4, 1, 3, 3, seed=0)[:, 0]
    image_file = write_bytes(
        tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(images), compress=True
    )
    write_bytes(
        tmp_path / "t10k-labels-idx1-ubyte.gz",
        idx_bytes(np.arange(4, dtype=np.uint8)),
        compress=True,
    )
    from_dir = load_dataset(tmp_path, split="test")
    assert from_dir.labels.tolist() == [0, 1, 2, 3]
    # One file is one split, labelled by the labels file of the same name beside it.
    from_file = load_dataset(image_file)
    assert from_file.labels.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(from_file.images[:, 0].numpy(), images)
    with pytest.raises(DataError, match=r"one idx file has no 'test' split; it has 'train'"):
        load_dataset(image_file, split="test")
    renamed = write_bytes(tmp_path / "other" / "digits.idx", idx_bytes(images))
    assert load_dataset(renamed).labels is None


def test_a_training_idx_file_stands_for_its_dataset(tmp_path):
    for split, count in (("train", 5), ("t10k", 3)):
        write_bytes(
            tmp_path / f"{split}-images-idx3-ubyte",
            idx_bytes(random_images(count, 1, 4, 4, seed=count)[:, 0]),
        )
    train_file = tmp_path / "train-images-idx3-ubyte"
    assert dataset_splits(train_file) == {"train", "test"}
    assert len(load_dataset(train_file)) == 5 and len(load_dataset(train_file, split="test")) == 3


def test_emnist_folder_picks_a_subset_and_turns_images_upright(tmp_path):
    upright = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    for subset in ("balanced", "letters"):
        for split, count in (("train", 2), ("test", 1)):
            stored = upright[:count].transpose(0, 2, 1)  # EMNIST stores images transposed
            name = f"emnist-{subset}-{split}-images-idx3-ubyte.gz"
            write_bytes(tmp_path / name, idx_bytes(stored), compress=True)
            name = f"emnist-{subset}-{split}-labels-idx1-ubyte.gz"
            write_bytes(tmp_path / name, idx_bytes(np.ones(count, np.uint8)), compress=True)
    with pytest.raises(DataError, match=r"2 idx datasets \(emnist-balanced, emnist-letters\)"):
        load_dataset(tmp_path)
    train_file = tmp_path / "emnist-letters-train-images-idx3-ubyte.gz"
    data = load_dataset(train_file)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), upright)
    assert data.labels.tolist() == [1, 1]
    test = load_dataset(train_file, split="test")
    np.testing.assert_array_equal(test.images[:, 0].numpy(), upright[:1])
    assert has_test_split(train_file)


def test_imagenet_file_and_directory(tmp_path):
    images = random_images(2, 3, 32, 32, seed=1)
    np.savez(tmp_path / "val_data.npz", data=imagenet_rows(images), labels=np.array([1, 2]))
    np.testing.assert_array_equal(load_dataset(tmp_path, split="test").images.numpy(), images)
    assert dataset_splits(tmp_path) == {"test", "val"}
    # One file is one split, whatever its name.
    np.testing.assert_array_equal(load_dataset(tmp_path / "val_data.npz").images.numpy(), images)
    assert not has_test_split(tmp_path / "val_data.npz")


def test_imagenet_parent_of_the_released_folders(tmp_path):
    train = random_images(3, 3, 8, 8, seed=2)
    val = random_images(2, 3, 8, 8, seed=3)
    for folder in ("Imagenet8_train_npz", "Imagenet8_val_npz"):
        (tmp_path / folder).mkdir()
    for index, part in ((1, train[:2]), (2, train[2:])):
        np.savez(
            tmp_path / "Imagenet8_train_npz" / f"train_data_batch_{index}.npz",
            data=imagenet_rows(part),
            labels=[1] * len(part),
        )
    np.savez(
        tmp_path / "Imagenet8_val_npz" / "val_data.npz", data=imagenet_rows(val), labels=[5, 6]
    )
    assert dataset_splits(tmp_path) == {"train", "test", "val"}
    np.testing.assert_array_equal(load_dataset(tmp_path).images.numpy(), train)
    data = load_dataset(tmp_path, split="test")
    np.testing.assert_array_equal(data.images.numpy(), val)
    assert data.labels.tolist() == [4, 5]
    # The train folder alone has no test split; the val folder alone is one.
    assert not has_test_split(tmp_path / "Imagenet8_train_npz")
    assert has_test_split(tmp_path / "Imagenet8_val_npz")
    # Two releases side by side are ambiguous.
    (tmp_path / "copy").mkdir()
    np.savez(tmp_path / "copy" / "val_data.npz", data=imagenet_rows(val), labels=[5, 6])
    with pytest.raises(DataError, match=r"expected one val_data\.npz, found .*copy"):
        load_dataset(tmp_path, split="test")


def test_image_tar_with_split_folders(tmp_path):
    archive = tmp_path / "jpegs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, value in (("train", 10), ("test", 200)):
            for name in ("cat", "dog"):
                add_tar_member(
                    tar,
                    f"{split}/{name}/0.png",
                    encode_image(np.full((4, 4, 3), value, np.uint8), "PNG"),
                )
    train = load_dataset(archive)
    assert train.classes == ("cat", "dog") and (train.images == 10).all().item()
    assert (load_dataset(archive, split="test").images == 200).all().item()


def test_unsplit_image_folder_is_the_train_split(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert len(load_dataset(tmp_path, size=2)) == 1
    assert dataset_splits(tmp_path) == {"train"}
    with pytest.raises(DataError, match=r"without split folders .* no 'test' split"):
        load_dataset(tmp_path, split="test")


def test_validation_folder_is_the_test_split_when_there_is_no_test_folder(tmp_path):
    for split, value in (("train", 10), ("val", 200)):
        write_image(tmp_path / split / "a.png", np.full((4, 4, 3), value, np.uint8))
    assert dataset_splits(tmp_path) == {"train", "test", "val"}
    assert (load_dataset(tmp_path, split="test").images == 200).all().item()
    write_image(tmp_path / "test" / "a.png", np.full((4, 4, 3), 77, np.uint8))
    assert (load_dataset(tmp_path, split="test").images == 77).all().item()


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar"])
def test_cifar_splits_are_found_by_name(tmp_path, archive):
    write_cifar10(tmp_path / "tree")
    (tmp_path / "tree" / "cifar-10-batches-py" / "test_batch").unlink()
    spec = make_tar(tmp_path / "tree", tmp_path / "c.tar.gz") if archive else tmp_path / "tree"
    assert dataset_splits(spec) == {"train"}
    with pytest.raises(DataError, match=r"has no 'test' split; it has 'train'"):
        load_dataset(spec, split="test")


def test_same_source_compares_resolved_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert same_source(tmp_path / "data", f"{tmp_path}/link/")
    assert same_source("fashion-mnist-small", "fashion-mnist-small")
    assert not same_source(tmp_path / "data", tmp_path)
    assert not same_source(tmp_path / "data", tmp_path / "missing")


def test_unknown_name_and_unknown_content(tmp_path):
    with pytest.raises(
        DataError,
        match=r"mnist-large: neither a known dataset name .*supported: .*fashion-mnist-small",
    ):
        load_dataset("mnist-large")
    path = write_bytes(tmp_path / "data.csv", b"a,b,c\n1,2,3\n")
    with pytest.raises(
        DataError, match=r"data\.csv: content matches no supported format .*supported:"
    ):
        load_dataset(path)
    with pytest.raises(TypeError, match="name or a path, got int"):
        load_dataset(3)
