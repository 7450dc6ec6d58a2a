import tarfile

import numpy as np
import pytest

from flowkit.data import DataError, read_image_folder

from .builders import (
    add_tar_member,
    encode_image,
    make_tar,
    random_images,
    write_bytes,
    write_image,
)


def hwc(images):
    return images.transpose(0, 2, 3, 1)


@pytest.fixture
def class_folder(tmp_path):
    """``root/{cat,ant}/*.png``: 2 cats and 3 ants, 6x5 RGB; returns (root, images by path)."""
    root = tmp_path / "pets"
    images = hwc(random_images(5, 3, 5, 6, seed=1))
    names = ["cat/b.png", "cat/a.png", "ant/z.png", "ant/x.png", "ant/y.png"]
    for name, image in zip(names, images):
        write_image(root / name, image)
    return root, dict(zip(names, images))


def expected_order(by_name):
    names = sorted(by_name, key=lambda name: tuple(name.split("/")))
    return names, np.stack([by_name[name] for name in names]).transpose(0, 3, 1, 2)


def test_class_folders_give_sorted_classes_and_labels(class_folder):
    root, by_name = class_folder
    data = read_image_folder(root)
    names, images = expected_order(by_name)
    assert data.classes == ("ant", "cat")
    np.testing.assert_array_equal(data.images.numpy(), images)  # PNG is lossless
    np.testing.assert_array_equal(data.labels.numpy(), [0, 0, 0, 1, 1])


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_matches_folder(class_folder, tmp_path, mode):
    root, _ = class_folder
    archive = make_tar(
        root.parent, tmp_path / f"pets.tar{'.gz' if mode == 'w:gz' else ''}", mode=mode
    )
    from_folder, from_tar = read_image_folder(root), read_image_folder(archive)
    np.testing.assert_array_equal(from_tar.images.numpy(), from_folder.images.numpy())
    np.testing.assert_array_equal(from_tar.labels.numpy(), from_folder.labels.numpy())
    assert from_tar.classes == from_folder.classes  # the shared "pets/" wrapper is looked through


def test_loose_images_are_unlabelled_and_other_files_skipped(tmp_path):
    images = hwc(random_images(3, 3, 4, 4, seed=2))
    for index, image in enumerate(images):
        write_image(tmp_path / f"{index:03d}.png", image)
    write_bytes(tmp_path / "README.txt", b"not an image")
    write_bytes(tmp_path / "._000.png", b"AppleDouble metadata, not an image")
    data = read_image_folder(tmp_path)
    assert data.labels is None and data.classes is None
    np.testing.assert_array_equal(data.images.numpy(), images.transpose(0, 3, 1, 2))


def test_split_in_folder_and_in_wrapped_tar(tmp_path):
    images = hwc(random_images(4, 3, 4, 4, seed=3))
    layout = {
        "train/dog/1.png": 0,
        "train/emu/1.png": 1,
        "test/dog/1.png": 2,
        "test/emu/2.jpg.png": 3,
    }
    for name, index in layout.items():
        write_image(tmp_path / "tree" / "cifar" / name, images[index])
    archive = make_tar(tmp_path / "tree", tmp_path / "cifar.tar.gz")  # members cifar/...
    folder = tmp_path / "tree" / "cifar"
    for source in (folder, archive):
        test = read_image_folder(source, split="test")
        np.testing.assert_array_equal(test.images.numpy(), images[2:].transpose(0, 3, 1, 2))
        assert test.classes == ("dog", "emu")
        np.testing.assert_array_equal(test.labels.numpy(), [0, 1])
    with pytest.raises(DataError, match="look like dataset splits"):
        read_image_folder(folder)
    with pytest.raises(
        DataError, match=r"expected a sub-folder 'val' for the split, found test, train"
    ):
        read_image_folder(folder, split="val")
    with pytest.raises(
        DataError, match=r"expected images under 'val'/ .* found top-level entries cifar"
    ):
        read_image_folder(archive, split="val")


def test_jpeg_decodes_close_to_source(tmp_path):
    image = np.full((8, 8, 3), (200, 40, 90), np.uint8)
    write_image(tmp_path / "a.jpg", image, "JPEG")
    data = read_image_folder(tmp_path)
    assert data.images.shape == (1, 3, 8, 8)
    assert np.abs(data.images[0].numpy().transpose(1, 2, 0).astype(int) - image).max() <= 4


def test_grayscale_and_rgb_of_grey_images(tmp_path):
    grey = random_images(2, 1, 4, 4, seed=4)[:, 0]
    for index, image in enumerate(grey):
        write_image(tmp_path / f"{index}.png", image)
    as_grey = read_image_folder(tmp_path, grayscale=True)
    np.testing.assert_array_equal(as_grey.images[:, 0].numpy(), grey)
    as_rgb = read_image_folder(tmp_path)
    assert as_rgb.images.shape == (2, 3, 4, 4)
    for channel in range(3):
        np.testing.assert_array_equal(as_rgb.images[:, channel].numpy(), grey)


def test_size_resizes_shorter_side_and_crops_centre(tmp_path):
    # 12 wide, 6 high: the centre 6x6 square is 100, the side thirds 0 and 255.
    wide = np.full((6, 12, 3), 100, np.uint8)
    wide[:, :3], wide[:, 9:] = 0, 255
    write_image(tmp_path / "wide.png", wide)
    # 8 wide, 16 high, uniform: any resize keeps the value.
    write_image(tmp_path / "tall.png", np.full((16, 8, 3), 50, np.uint8))
    data = read_image_folder(tmp_path, size=6)
    assert data.images.shape == (2, 3, 6, 6)
    assert (data.images[1] == 100).all().item()  # no resize, centre crop only
    shrunk = read_image_folder(tmp_path, size=4)
    assert (shrunk.images[0] == 50).all().item()  # 8x16 -> 4x8 -> crop 4x4
    with pytest.raises(ValueError, match=r"size as a positive int or None, got 0"):
        read_image_folder(tmp_path, size=0)


def test_inconsistent_sizes_name_the_file(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "b.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"b\.png: expected an image of size 4x4 like .*a\.png, got 5x4; pass size="
    ):
        read_image_folder(tmp_path)


def test_corrupt_jpeg_in_tar_names_member(tmp_path):
    good = encode_image(np.zeros((16, 16, 3), np.uint8), "JPEG")
    noisy = encode_image(random_images(1, 3, 16, 16, seed=5)[0].transpose(1, 2, 0), "JPEG")
    archive = tmp_path / "set.tar"
    with tarfile.open(archive, "w") as tar:
        add_tar_member(tar, "imgs/good.jpg", good)
        add_tar_member(tar, "imgs/broken.jpg", noisy[: len(noisy) // 2])
    with pytest.raises(DataError, match=r"set\.tar:imgs/broken\.jpg: cannot decode image"):
        read_image_folder(archive)


def test_non_image_file_with_image_name(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_bytes(tmp_path / "b.png", b"plain text pretending to be a PNG")
    with pytest.raises(DataError, match=r"b\.png: cannot decode image \(UnidentifiedImageError"):
        read_image_folder(tmp_path)


def test_sixteen_bit_images_are_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match=r"deep\.png: expected an 8-bit image, got Pillow mode I"):
        read_image_folder(tmp_path)


def test_mixed_layout_and_empty_folder(tmp_path):
    write_image(tmp_path / "loose.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "cls" / "inner.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"either class folders or loose images, found both .*loose\.png"
    ):
        read_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: expected images .* found none"):
        read_image_folder(empty)


def test_unreadable_and_truncated_archives(tmp_path):
    path = write_bytes(tmp_path / "fake.tar.gz", b"\x1f\x8b" + bytes(100))
    with pytest.raises(
        DataError, match=r"fake\.tar\.gz: expected an image directory or a \(compressed\) tar"
    ):
        read_image_folder(path)
    for index, image in enumerate(hwc(random_images(6, 3, 16, 16, seed=6))):
        write_image(tmp_path / "tree" / f"{index}.png", image)
    archive = make_tar(tmp_path / "tree", tmp_path / "tree.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"tree\.tar\.gz: .*could not read it as a tar archive"):
        read_image_folder(archive)
