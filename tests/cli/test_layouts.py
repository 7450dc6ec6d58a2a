"""``flowkit train``, ``eval`` and ``sample`` on every image dataset layout, as distributed.

Each layout is written with the real file names and record formats (idx magic numbers, CIFAR's
Python 2 pickles with bytes keys, downsampled ImageNet's npz keys, PNG folders, tars), holding
12 training and 7 test images of distinct content, so a test metric computed on the wrong split
shows in the number of examples and in the value.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit import cli
from tests.cli.conftest import TINY_GLOW
from tests.data.builders import encode_image, idx_bytes, write_bytes, write_image, write_pickle

TRAIN, TEST = 12, 7
# TINY_GLOW's run, with batches small enough for 12 training images.
RUN = [
    *TINY_GLOW,
    "--set",
    "train.batch_size=4",
    "--set",
    "train.init_batch_size=8",
    "--set",
    "train.num_samples=4",
]
GREY_28 = ["--set", "model.input_shape=[1, 28, 28]"]
GREY_32 = ["--set", "model.input_shape=[1, 32, 32]"]
RGB_32 = ["--set", "model.input_shape=[3, 32, 32]"]
RGB_16 = ["--set", "model.input_shape=[3, 16, 16]"]


def images(count: int, shape: tuple[int, ...], split: str) -> np.ndarray:
    """Random uint8 images; the test split is brighter, so the two never coincide."""
    low, high = (0, 128) if split == "train" else (128, 256)
    rng = np.random.default_rng(0 if split == "train" else 1)
    return rng.integers(low, high, (count, *shape), dtype=np.uint8)


def labels(count: int, classes: int) -> list[int]:
    return [index % classes for index in range(count)]


def make_tar(archive: Path, root: Path, top: str) -> Path:
    """``archive`` holding ``root/top`` as ``top/...``, as the distributed tarballs do."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / top, arcname=top)
    return archive


# --- the layouts: each writes itself under a folder and returns the train command's data flags --
def mnist_files(
    root: Path, *, compress: bool = True, names: str = "{split}-{kind}-idx{rank}-ubyte"
) -> Path:
    """MNIST's four files (Fashion-MNIST and KMNIST name theirs alike) in ``root/mnist``."""
    ending = ".gz" if compress else ""
    for split, prefix, count in (("train", "train", TRAIN), ("test", "t10k", TEST)):
        pixels = images(count, (28, 28), split)
        for kind, rank, array in (
            ("images", 3, pixels),
            ("labels", 1, np.array(labels(count, 10), np.uint8)),
        ):
            name = names.format(split=prefix, kind=kind, rank=rank) + ending
            write_bytes(root / "mnist" / name, idx_bytes(array), compress=compress)
    return root / "mnist"


def mnist(root: Path):
    # Padded to 32x32 as glow-mnist does: eval must pad the test images the same way.
    return ["--data", mnist_files(root), "--set", "train.pad=2", *GREY_32]


def mnist_plain(root: Path):
    # Uncompressed, with a dot before "idx" as the widely mirrored copies name them.
    folder = mnist_files(root, compress=False, names="{split}-{kind}.idx{rank}-ubyte")
    return ["--data", folder, *GREY_28]


def write_emnist(folder: Path, subsets: tuple[str, ...] = ("balanced", "digits")) -> None:
    """EMNIST's gzip folder: several subsets side by side, images stored transposed."""
    for subset in subsets:
        for split, count in (("train", TRAIN), ("test", TEST)):
            pixels = images(count, (28, 28), split).transpose(0, 2, 1)
            for kind, rank, array in (
                ("images", 3, pixels),
                ("labels", 1, np.array(labels(count, 10), np.uint8)),
            ):
                name = f"emnist-{subset}-{split}-{kind}-idx{rank}-ubyte.gz"
                write_bytes(folder / name, idx_bytes(array), compress=True)
        (folder / f"emnist-{subset}-mapping.txt").write_text("0 48\n1 49\n")


def emnist(root: Path):
    write_emnist(root / "gzip")
    # The folder holds several subsets; its training images file picks one.
    return ["--data", root / "gzip" / "emnist-balanced-train-images-idx3-ubyte.gz", *GREY_28]


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    train = images(TRAIN, (3, 32, 32), "train")
    bounds = [0, 3, 5, 7, 10, TRAIN]
    for index in range(5):
        part = train[bounds[index] : bounds[index + 1]]
        batch = {
            b"batch_label": f"training batch {index + 1} of 5".encode(),
            b"labels": labels(len(part), 10),
            b"data": part.reshape(len(part), -1),
            b"filenames": [b"x.png"] * len(part),
        }
        write_pickle(folder / f"data_batch_{index + 1}", batch)
    test = images(TEST, (3, 32, 32), "test")
    write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": labels(TEST, 10),
            b"data": test.reshape(TEST, -1),
            b"filenames": [b"y.png"] * TEST,
        },
    )
    meta = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta)
    return folder


def cifar10(root: Path):
    return ["--data", write_cifar10(root), *RGB_32]


def cifar10_tar(root: Path):
    write_cifar10(root / "tree")
    archive = make_tar(root / "cifar-10-python.tar.gz", root / "tree", "cifar-10-batches-py")
    return ["--data", archive, *RGB_32]


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    for split, count in (("train", TRAIN), ("test", TEST)):
        batch = {
            b"filenames": [b"z.png"] * count,
            b"batch_label": split.encode(),
            b"fine_labels": labels(count, 100),
            b"coarse_labels": labels(count, 20),
            b"data": images(count, (3, 32, 32), split).reshape(count, -1),
        }
        write_pickle(folder / split, batch)
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    write_pickle(folder / "meta", meta)
    return folder


def cifar100(root: Path):
    return ["--data", write_cifar100(root), *RGB_32]


def cifar100_tar(root: Path):
    write_cifar100(root / "tree")
    archive = make_tar(root / "cifar-100-python.tar.gz", root / "tree", "cifar-100-python")
    return ["--data", archive, *RGB_32]


def write_imagenet32(root: Path) -> tuple[Path, Path]:
    """The release's ``Imagenet32_train_npz/train_data_batch_<k>.npz`` and
    ``Imagenet32_val_npz/val_data.npz``."""
    train_folder, val_folder = root / "Imagenet32_train_npz", root / "Imagenet32_val_npz"
    train_folder.mkdir(parents=True)
    val_folder.mkdir()
    train = images(TRAIN, (3, 32, 32), "train").reshape(TRAIN, -1)
    mean = train.mean(axis=0)
    bounds = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, TRAIN]
    for index in range(10):
        part = train[bounds[index] : bounds[index + 1]]
        np.savez(
            train_folder / f"train_data_batch_{index + 1}.npz",
            data=part,
            labels=[1 + k for k in labels(len(part), 1000)],
            mean=mean,
        )
    test = images(TEST, (3, 32, 32), "test").reshape(TEST, -1)
    np.savez(val_folder / "val_data.npz", data=test, labels=[1 + k for k in labels(TEST, 1000)])
    return train_folder, val_folder


def imagenet32(root: Path):
    write_imagenet32(root / "imagenet32")
    return ["--data", root / "imagenet32", *RGB_32]


def imagenet32_val_as_test_data(root: Path):
    train_folder, val_folder = write_imagenet32(root / "imagenet32")
    return ["--data", train_folder, "--test-data", val_folder, *RGB_32]


def write_png_splits(folder: Path) -> Path:
    for split, count in (("train", TRAIN), ("test", TEST)):
        for index, image in enumerate(images(count, (16, 16, 3), split)):
            write_image(
                folder / split / ("cat" if index % 2 else "dog") / f"{index:03d}.png", image
            )
    return folder


def png_folders(root: Path):
    return ["--data", write_png_splits(root / "pngs"), *RGB_16]


def png_train_val_folders(root: Path):
    """``train/`` and ``val/`` without ``test/``: the validation folder is the test split."""
    for split, count in (("train", TRAIN), ("val", TEST)):
        source = "train" if split == "train" else "test"
        for index, image in enumerate(images(count, (16, 16, 3), source)):
            write_image(
                root / "pngs" / split / ("cat" if index % 2 else "dog") / f"{index:03d}.png", image
            )
    return ["--data", root / "pngs", *RGB_16]


def image_tar(root: Path):
    archive = root / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", TRAIN), ("test", TEST)):
            for index, image in enumerate(images(count, (16, 16, 3), split)):
                data = encode_image(image, "PNG")
                member = tarfile.TarInfo(f"images/{split}/{index:03d}.png")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return ["--data", archive, *RGB_16]


def unsplit_folder_and_tar(root: Path):
    """An unsplit folder trains; an unsplit tar given as --test-data is tested on whole."""
    for index, image in enumerate(images(TRAIN, (16, 16, 3), "train")):
        write_image(root / "train_pngs" / f"{index:03d}.png", image)
    write_png_splits(root / "test_tree")
    with tarfile.open(root / "test.tar", "w") as tar:
        for path in sorted((root / "test_tree" / "test").rglob("*.png")):
            tar.add(path, arcname=f"{path.parent.name}/{path.name}")
    return ["--data", root / "train_pngs", "--test-data", root / "test.tar", *RGB_16]


LAYOUTS: dict[str, Callable[[Path], list]] = {
    "mnist-idx-gz": mnist,
    "mnist-idx-plain": mnist_plain,
    "emnist-idx-gz": emnist,
    "cifar10-folder": cifar10,
    "cifar10-tar-gz": cifar10_tar,
    "cifar100-folder": cifar100,
    "cifar100-tar-gz": cifar100_tar,
    "imagenet32-npz-folders": imagenet32,
    "imagenet32-val-as-test-data": imagenet32_val_as_test_data,
    "png-train-test-folders": png_folders,
    "png-train-val-folders": png_train_val_folders,
    "png-tar-train-test": image_tar,
    "png-folder-and-test-tar": unsplit_folder_and_tar,
}


# --- running the command line ------------------------------------------------------------------
def run_main(capsys, *args) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def one_error_line(capsys, status: int, *args) -> str:
    """The command failed with ``status`` and one line, ``flowkit: error: ...``."""
    got, _, err = run_main(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == status and len(lines) == 1, (got, err)
    assert lines[0].startswith("flowkit: error: "), lines[0]
    return lines[0]


def train(capsys, output: Path, data_flags: list) -> dict:
    """Train the tiny Glow; the checkpoint's record of its data."""
    status, out, err = run_main(capsys, "train", *RUN, *data_flags, "--output", output)
    assert status == 0, err
    assert "trained 2 steps" in out
    state = torch.load(output / "checkpoint.pt", map_location="cpu", weights_only=False)
    return state["data"]


def evaluate(capsys, output: Path, *flags) -> dict:
    status, out, err = run_main(capsys, "eval", output / "checkpoint.pt", "--json", *flags)
    assert status == 0, err
    return json.loads(out)


def last_test_value(output: Path) -> float:
    """The test metric of the run's last evaluation, from ``metrics.jsonl``."""
    values = [
        value
        for line in (output / "metrics.jsonl").read_text().splitlines()
        for key, value in json.loads(line).items()
        if key.startswith("test_")
    ]
    return values[-1]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_trains_evaluates_and_samples_on_its_test_split(tmp_path, capsys, layout):
    data_flags = LAYOUTS[layout](tmp_path)
    output = tmp_path / "run"
    data = train(capsys, output, data_flags)
    assert (data["train_examples"], data["test_examples"]) == (TRAIN, TEST)
    # eval on the run's own data scores the very images training tested on: the same count and,
    # with the same weights and evaluation noise, the same value.
    result = evaluate(capsys, output)
    assert result["examples"] == TEST
    assert math.isclose(result["bits_per_dim"], last_test_value(output), rel_tol=1e-5)
    assert evaluate(capsys, output, "--split", "train")["examples"] == TRAIN
    samples = tmp_path / "samples"
    status, _, err = run_main(
        capsys,
        "sample",
        output / "checkpoint.pt",
        "--num",
        4,
        "--temperatures",
        0.5,
        "--output",
        samples,
    )
    assert status == 0, err
    assert [path.name for path in samples.iterdir()] == ["samples_t0.50.png"]


def test_test_fraction_holds_out_seeded_images_that_eval_finds_again(tmp_path, capsys):
    for index, image in enumerate(images(20, (16, 16, 3), "train")):
        write_image(tmp_path / "pngs" / f"{index:03d}.png", image)
    flags = ["--data", tmp_path / "pngs", "--test-fraction", 0.25, "--seed", 3, *RGB_16]
    values = []
    for name in ("first", "again"):
        output = tmp_path / name
        data = train(capsys, output, flags)
        assert (data["train_examples"], data["test_examples"]) == (15, 5)
        assert (data["test_split"], data["test_fraction"], data["split_seed"]) == (
            "held-out",
            0.25,
            3,
        )
        result = evaluate(capsys, output)
        assert result["examples"] == 5 and "0.25 held out with seed 3" in result["data"]
        assert math.isclose(result["bits_per_dim"], last_test_value(output), rel_tol=1e-5)
        assert evaluate(capsys, output, "--split", "train")["examples"] == 15
        # Naming the run's own data is the run's own split, not all 20 images.
        assert evaluate(capsys, output, "--data", tmp_path / "pngs")["examples"] == 5
        values.append(result["bits_per_dim"])
    assert values[0] == values[1]
    # interpolate reads the same five held-out images.
    checkpoint = tmp_path / "first" / "checkpoint.pt"
    walk = ["interpolate", checkpoint, "--steps", 2, "--first", 0]
    status, _, err = run_main(capsys, *walk, "--second", 4, "--output", tmp_path / "a.png")
    assert status == 0, err
    line = one_error_line(capsys, 2, *walk, "--second", 5, "--output", tmp_path / "b.png")
    assert "[0, 5)" in line


def test_test_data_naming_the_training_data_means_its_test_split(tmp_path, capsys):
    flags = ["--data", mnist_files(tmp_path), *GREY_28]
    data = train(capsys, tmp_path / "run", [*flags, "--test-data", tmp_path / "mnist"])
    assert (data["test_split"], data["test_examples"]) == ("test", TEST)
    assert evaluate(capsys, tmp_path / "run")["examples"] == TEST


def test_test_data_naming_unsplit_training_data_is_refused(tmp_path, capsys):
    for index, image in enumerate(images(TRAIN, (16, 16, 3), "train")):
        write_image(tmp_path / "pngs" / f"{index:03d}.png", image)
    line = one_error_line(
        capsys,
        2,
        "train",
        *RUN,
        "--data",
        tmp_path / "pngs",
        "--test-data",
        str(tmp_path / "pngs") + "/",
        *RGB_16,
        "--output",
        tmp_path / "run",
    )
    assert "training data itself" in line and "--test-fraction" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("writer", "extra", "status", "fragments"),
    [
        # No test split and no way to get one.
        ("unsplit", [], 2, ["no test split", "--test-data", "--test-fraction"]),
        # A held-out share where the data brings its own test split.
        ("mnist", ["--test-fraction", "0.2"], 2, ["--test-fraction", "has one"]),
        ("mnist", ["--test-data", "{root}/mnist", "--test-fraction", "0.2"], 2, ["not both"]),
        # EMNIST's folder holds several subsets: the message says how to pick one.
        ("emnist", [], 1, ["emnist-balanced", "emnist-digits", "training images file"]),
    ],
    ids=["no-test-split", "fraction-with-test-split", "both-flags", "emnist-subsets"],
)
def test_data_without_a_clear_test_set_is_one_error_line(
    tmp_path, capsys, writer, extra, status, fragments
):
    if writer == "unsplit":
        write_image(tmp_path / "data" / "0.png", images(1, (16, 16, 3), "train")[0])
    elif writer == "mnist":
        mnist_files(tmp_path)
        (tmp_path / "data").symlink_to(tmp_path / "mnist")
    else:
        write_emnist(tmp_path / "data")
    extra = [str(arg).replace("{root}", str(tmp_path)) for arg in extra]
    line = one_error_line(
        capsys,
        status,
        "train",
        *RUN,
        "--data",
        tmp_path / "data",
        *extra,
        "--output",
        tmp_path / "run",
    )
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not (tmp_path / "run").exists()
