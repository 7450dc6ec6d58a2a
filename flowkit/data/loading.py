"""``load_dataset``: finds the reader and the splits of a dataset name or path."""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from flowkit.data._io import GZIP_MAGIC
from flowkit.data.base import DataError, ImageData
from flowkit.data.bundled import load_bundled
from flowkit.data.cifar import read_cifar10, read_cifar100
from flowkit.data.folder import IMAGE_EXTENSIONS, read_image_folder
from flowkit.data.idx import _idx_datasets, _idx_name, _idx_splits, _read_idx_file, read_idx_dir
from flowkit.data.imagenet import _find_batches, read_imagenet_npz

__all__ = ["dataset_splits", "has_test_split", "load_dataset", "same_source"]

_SUPPORTED = (
    "the name 'fashion-mnist-small' (bundled); "
    "a CIFAR-10 / CIFAR-100 python batches directory or its .tar.gz; "
    "an MNIST / Fashion-MNIST / KMNIST / EMNIST directory of idx files, or one idx images file "
    "(plain or .gz); "
    "a downsampled ImageNet npz file or a directory of train_data_batch_*.npz / val_data.npz (or "
    "of the Imagenet32_train_npz/ and Imagenet32_val_npz/ folders); "
    f"a folder or tar archive of images ({', '.join(IMAGE_EXTENSIONS)})"
)
_SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation"})
# Where an image folder has no test/ folder, its validation folder is the test split (as ImageNet's
# validation set serves as its test set).
_VAL_FOLDERS = ("val", "valid", "validation")
# How many bytes of a (decompressed) file are enough to recognise it: a tar header is 512.
_PEEK = 512
_TAR_MAGIC = (257, b"ustar")
_COMPRESSED = ((GZIP_MAGIC, gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def load_dataset(spec: str | os.PathLike[str], split: str = "train", **options: Any) -> ImageData:
    """Load one split of a dataset by name or path, choosing the reader from the content.

    ``spec`` is ``"fashion-mnist-small"`` (the bundled subset, :func:`load_bundled`) or a path,
    with these splits:

    - a directory with CIFAR-10 batches (``data_batch_*``, ``test_batch``) or CIFAR-100 files
      (``train``, ``test``, ``meta``), or their parent: :func:`read_cifar10`,
      :func:`read_cifar100`;
    - a directory of idx files (MNIST, Fashion-MNIST, KMNIST: ``train-*`` and ``t10k-*`` or
      ``test-*``; EMNIST: ``emnist-<subset>-train-*`` and ``emnist-<subset>-test-*``):
      :func:`read_idx_dir`. One idx images file is one split, labelled by the labels file of the
      same name beside it; a training images file (``...train-images-idx3-ubyte[.gz]``) stands
      for its whole dataset, so its test split is the test file beside it. That picks one subset
      of EMNIST's folder, which holds six;
    - a directory of ``train_data_batch_*.npz`` / ``val_data.npz``, or the parent of the
      release's ``Imagenet32_train_npz/`` and ``Imagenet32_val_npz/``: :func:`read_imagenet_npz`,
      with the validation set as its test split (``"test"`` or ``"val"``); one npz file is one
      split;
    - a tar archive holding ``cifar-10-batches-py/`` or ``cifar-100-python/``: the CIFAR readers;
    - any other directory or tar archive: :func:`read_image_folder`. With split folders
      (``train/``, ``test/``, ...) ``split`` picks one, and ``val/`` (``valid/``,
      ``validation/``) is the test split when there is no ``test/``; otherwise the whole folder
      is the one split, ``"train"``.

    Files are recognised by their bytes (gzip, zip, tar and idx magic numbers), not their names;
    names only pick splits. ``flowkit.data.loading.dataset_splits`` says which splits a source
    has without reading its images.

    Args:
        spec: Dataset name or path.
        split: ``"train"`` or ``"test"`` (``"val"`` where the dataset has one).
        **options: Passed to the reader, e.g. ``label_kind="coarse"`` for CIFAR-100, or ``size``
            and ``grayscale`` for image folders.

    Returns:
        The dataset as :class:`ImageData`; wrap it in :class:`ImageDataset` for a DataLoader.

    Raises:
        DataError: If the name is unknown, the path does not exist, its content matches no
            reader (the message lists what is supported) or it has no such split (the message
            names the splits it has).

    Example:
        >>> data = load_dataset("fashion-mnist-small", split="test")
        >>> data.images.shape
        torch.Size([1000, 1, 28, 28])
    """
    layout = _layout(spec)
    if split not in layout.splits:
        raise DataError(
            f"{spec}: {layout.description} has no {split!r} split; it has "
            f"{', '.join(repr(name) for name in sorted(layout.splits)) or 'none'}"
        )
    return layout.read(split, options)


def dataset_splits(spec: str | os.PathLike[str]) -> frozenset[str]:
    """The splits :func:`load_dataset` can read from ``spec``, found from names alone.

    No image is decoded: directories are listed, and a tar archive's member names are read.

    Args:
        spec: Dataset name or path, as for :func:`load_dataset`.

    Returns:
        A subset of ``{"train", "test", "val"}``; a source without a split of its own (a folder of
        images, one file) has only ``"train"``.

    Raises:
        DataError: As :func:`load_dataset` for an unknown name, a missing path or unknown content.

    Example:
        >>> sorted(dataset_splits("fashion-mnist-small"))
        ['test', 'train']
    """
    return _layout(spec).splits


def has_test_split(spec: str | os.PathLike[str]) -> bool:
    """Whether ``load_dataset(spec, split="test")`` has a test split to read.

    Example:
        >>> has_test_split("fashion-mnist-small")
        True
    """
    return "test" in dataset_splits(spec)


def same_source(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether two dataset specs name the same source: one name, or paths to the same file.

    Example:
        >>> same_source("fashion-mnist-small", "fashion-mnist-small")
        True
    """
    if isinstance(first, str) and isinstance(second, str) and first == second:
        return True
    paths = [Path(spec).expanduser() for spec in (first, second)]
    if not all(path.exists() for path in paths):
        return False
    return paths[0].resolve() == paths[1].resolve()


_Reader = Callable[[str, "dict[str, Any]"], ImageData]


@dataclass(frozen=True)
class _Layout:
    """What a source is (for messages), which splits it has, and how to read one of them."""

    description: str
    splits: frozenset[str]
    read: _Reader


def _layout(spec: str | os.PathLike[str]) -> _Layout:
    if isinstance(spec, str) and spec == "fashion-mnist-small":
        return _Layout(
            "the bundled dataset",
            frozenset({"train", "test"}),
            lambda split, options: load_bundled(split, **options),
        )
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"load_dataset expects a name or a path, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"{spec}: neither a known dataset name nor an existing path; supported: {_SUPPORTED}"
        )
    if path.is_dir():
        return _directory_layout(path)
    return _file_layout(path)


def _splits(**present: bool) -> frozenset[str]:
    return frozenset(name for name, found in present.items() if found)


def _directory_layout(path: Path) -> _Layout:
    def has(root: Path, *names: str) -> bool:
        return any((root / name).is_file() for name in names)

    if (path / "cifar-10-batches-py").is_dir() or has(path, "data_batch_1", "test_batch"):
        root = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        return _Layout(
            "the CIFAR-10 batches folder",
            _splits(train=any(root.glob("data_batch_*")), test=has(root, "test_batch")),
            lambda split, options: read_cifar10(path, split=split, **options),
        )
    if (path / "cifar-100-python").is_dir() or (has(path, "meta") and has(path, "train", "test")):
        root = path / "cifar-100-python" if (path / "cifar-100-python").is_dir() else path
        return _Layout(
            "the CIFAR-100 folder",
            _splits(train=has(root, "train"), test=has(root, "test")),
            lambda split, options: read_cifar100(path, split=split, **options),
        )
    if _idx_datasets(path):
        return _Layout(
            "the idx folder",
            _idx_splits(path),
            lambda split, options: read_idx_dir(path, split=split, **options),
        )
    train, val = _find_batches(path)
    if train or val:
        return _Layout(
            "the downsampled ImageNet folder",
            _splits(train=bool(train), test=bool(val), val=bool(val)),
            lambda split, options: read_imagenet_npz(path, split=split, **options),
        )
    folders = {entry.name for entry in path.iterdir() if entry.is_dir()} & _SPLIT_FOLDERS
    return _image_folder_layout(path, folders, "image folder")


def _image_folder_layout(path: Path, folders: set[str], kind: str) -> _Layout:
    """An image folder or tar: its split folders, or the whole of it as the training split."""
    if not folders:
        return _Layout(
            f"the {kind} without split folders ({', '.join(sorted(_SPLIT_FOLDERS))})",
            frozenset({"train"}),
            lambda split, options: read_image_folder(path, **options),
        )
    named = {"train": "train", "test": "test"}
    validation = [name for name in _VAL_FOLDERS if name in folders]
    if len(validation) == 1:
        named["val"] = validation[0]
        if "test" not in folders:
            named["test"] = validation[0]
    named = {split: folder for split, folder in named.items() if folder in folders}
    return _Layout(
        f"the {kind} with split folders {', '.join(f'{name}/' for name in sorted(folders))}",
        frozenset(named),
        lambda split, options: read_image_folder(path, split=named[split], **options),
    )


def _file_layout(path: Path) -> _Layout:
    head = _peek(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _Layout(
            "one npz file",
            frozenset({"train"}),
            lambda split, options: read_imagenet_npz(path, **options),
        )
    offset, magic = _TAR_MAGIC
    if head[offset : offset + len(magic)] == magic:
        # Finding a tar's splits reads the whole archive: once per version of the file is enough.
        status = path.stat()
        return _tar_layout(path.resolve(), status.st_size, status.st_mtime_ns)
    if len(head) >= 4 and head[:2] == b"\x00\x00" and 1 <= head[3] <= 4:
        return _idx_file_layout(path)
    raise DataError(
        f"{path}: content matches no supported format (first bytes {head[:8].hex(' ')}); "
        f"supported: {_SUPPORTED}"
    )


@functools.lru_cache(maxsize=8)
def _tar_layout(path: Path, size: int, modified: int) -> _Layout:
    """The layout of the tar at ``path`` of this ``size`` and modification time."""
    members = _tar_files(path)
    for folder, reader, train_names, test_name in (
        ("cifar-10-batches-py", read_cifar10, ("data_batch_1",), "test_batch"),
        ("cifar-100-python", read_cifar100, ("train",), "test"),
    ):
        inside = {member.name for member in members if folder in member.parts}
        if inside:
            return _Layout(
                f"the archive of {folder}/",
                _splits(train=bool(inside & set(train_names)), test=test_name in inside),
                _reading(reader, path),
            )
    images = [member.parts for member in members if member.suffix.lower() in IMAGE_EXTENSIONS]
    folders = {parts[0] for parts in images if len(parts) > 1} | {
        parts[1] for parts in images if len(parts) > 2
    }
    return _image_folder_layout(path, folders & _SPLIT_FOLDERS, "image archive")


def _reading(reader: Callable[..., ImageData], path: Path) -> _Reader:
    return lambda split, options: reader(path, split=split, **options)


def _idx_file_layout(path: Path) -> _Layout:
    named = _idx_name(path)
    if named is not None and named[1:] == ("train", "images"):
        subset = named[0]
        return _Layout(
            f"the idx dataset of {path.name}",
            _idx_splits(path.parent, subset),
            lambda split, options: read_idx_dir(path.parent, split=split, subset=subset, **options),
        )
    return _Layout(
        "one idx file",
        frozenset({"train"}),
        lambda split, options: _read_idx_file(path, **options),
    )


def _peek(path: Path) -> bytes:
    """The first bytes of ``path``, decompressed when it is gzip, bzip2 or xz."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
        opener = next((open_ for magic, open_ in _COMPRESSED if head.startswith(magic)), open)
        with opener(path, "rb") as stream:
            return stream.read(_PEEK)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise DataError(f"{path}: cannot read the start of the file ({error})") from None


def _tar_files(path: Path) -> list[PurePosixPath]:
    """Paths of the regular files in a tar archive: one pass over it, nothing extracted."""
    try:
        with tarfile.open(path, "r|*") as tar:
            return [PurePosixPath(member.name) for member in tar if member.isfile()]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: not a readable tar archive ({error})") from None
