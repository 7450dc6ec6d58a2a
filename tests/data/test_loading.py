import tarfile

import numpy as np
import pytest
import torch

from flowkit.data import DataError, load_bundled, load_dataset

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
    from_file = load_dataset(image_file)
    assert from_file.labels is None
    np.testing.assert_array_equal(from_file.images[:, 0].numpy(), images)


def test_imagenet_file_and_directory(tmp_path):
    images = random_images(2, 3, 32, 32, seed=1)
    np.savez(tmp_path / "val_data.npz", data=imagenet_rows(images), labels=np.array([1, 2]))
    for spec in (tmp_path, tmp_path / "val_data.npz"):
        data = load_dataset(spec, split="test")
        np.testing.assert_array_equal(data.images.numpy(), images)


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
    with pytest.raises(DataError, match=r"has no split folders .* got split='test'"):
        load_dataset(tmp_path, split="test")


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
