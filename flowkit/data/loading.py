"""``load_dataset``: one entry point that finds the right reader from a name or a path's content."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from flowkit.data._io import GZIP_MAGIC
from flowkit.data.base import DataError, ImageData
from flowkit.data.bundled import load_bundled
from flowkit.data.cifar import read_cifar10, read_cifar100
from flowkit.data.folder import IMAGE_EXTENSIONS, read_image_folder
from flowkit.data.idx import _find_idx_files, read_idx, read_idx_dir
from flowkit.data.imagenet import read_imagenet_npz

__all__ = ["load_dataset"]

_NAMED: dict[str, Callable[..., ImageData]] = {"fashion-mnist-small": load_bundled}
_SUPPORTED = (
    "the name 'fashion-mnist-small' (bundled); "
    "a CIFAR-10 / CIFAR-100 python batches directory or its .tar.gz; "
    "an MNIST-style directory of idx files, or one idx images file (plain or .gz); "
    "a downsampled ImageNet npz file or a directory of train_data_batch_*.npz / val_data.npz; "
    f"a folder or tar archive of images ({', '.join(IMAGE_EXTENSIONS)})"
)
_SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation"})
# How many bytes of a (decompressed) file are enough to recognise it: a tar header is 512.
_PEEK = 512
_TAR_MAGIC = (257, b"ustar")
_COMPRESSED = ((GZIP_MAGIC, gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def load_dataset(spec: str | os.PathLike[str], split: str = "train", **options: Any) -> ImageData:
    """Load a dataset by name or path, choosing the reader from the content.

    ``spec`` is ``"fashion-mnist-small"`` (the bundled subset, :func:`load_bundled`) or a path:

    - a directory with CIFAR-10 batches (``data_batch_*``, ``test_batch``) or CIFAR-100 files
      (``train``, ``test``, ``meta``), or their parent: :func:`read_cifar10`,
      :func:`read_cifar100`;
    - a directory of idx files: :func:`read_idx_dir`; one idx file: :func:`read_idx`, unlabelled;
    - an npz file, or a directory of ``train_data_batch_*.npz`` / ``val_data.npz``:
      :func:`read_imagenet_npz`;
    - a tar archive holding ``cifar-10-batches-py/`` or ``cifar-100-python/``: the CIFAR readers;
    - any other directory or tar archive: :func:`read_image_folder`. When it has split folders
      (``train/``, ``test/``, ...) ``split`` picks one; otherwise the whole folder is the training
      split.

    Files are recognised by their bytes (gzip, zip, tar and idx magic numbers), not their names.

    Args:
        spec: Dataset name or path.
        split: ``"train"`` or ``"test"`` (``"val"`` where the dataset has one).
        **options: Passed to the reader, e.g. ``label_kind="coarse"`` for CIFAR-100, or ``size``
            and ``grayscale`` for image folders.

    Returns:
        The dataset as :class:`ImageData`; wrap it in :class:`ImageDataset` for a DataLoader.

    Raises:
        DataError: If the name is unknown, the path does not exist or its content matches no
            reader; the message lists what is supported.

    Example:
        >>> data = load_dataset("fashion-mnist-small", split="test")
        >>> data.images.shape
        torch.Size([1000, 1, 28, 28])
    """
    if isinstance(spec, str) and spec in _NAMED:
        return _NAMED[spec](split, **options)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"load_dataset expects a name or a path, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"{spec}: neither a known dataset name nor an existing path; supported: {_SUPPORTED}"
        )
    if path.is_dir():
        return _load_directory(path, split, options)
    return _load_file(path, split, options)


def _load_directory(path: Path, split: str, options: dict[str, Any]) -> ImageData:
    def has(*names: str) -> bool:
        return any((path / name).is_file() for name in names)

    if (path / "cifar-10-batches-py").is_dir() or has("data_batch_1", "test_batch"):
        return read_cifar10(path, split=split, **options)
    if (path / "cifar-100-python").is_dir() or (has("meta") and has("train", "test")):
        return read_cifar100(path, split=split, **options)
    if _find_idx_files(path):
        return read_idx_dir(path, split=split, **options)
    if has("val_data.npz") or any(path.glob("train_data_batch_*.npz")):
        return read_imagenet_npz(path, split=split, **options)
    split_folders = {entry.name for entry in path.iterdir() if entry.is_dir()} & _SPLIT_FOLDERS
    return read_image_folder(path, split=_folder_split(path, split, split_folders), **options)


def _load_file(path: Path, split: str, options: dict[str, Any]) -> ImageData:
    head = _peek(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return read_imagenet_npz(path, split=split, **options)
    offset, magic = _TAR_MAGIC
    if head[offset : offset + len(magic)] == magic:
        top = _first_tar_file(path)
        if top is not None and "cifar-10-batches-py" in top.parts:
            return read_cifar10(path, split=split, **options)
        if top is not None and "cifar-100-python" in top.parts:
            return read_cifar100(path, split=split, **options)
        split_folders = set() if top is None else set(top.parts[:2]) & _SPLIT_FOLDERS
        return read_image_folder(path, split=_folder_split(path, split, split_folders), **options)
    if len(head) >= 4 and head[:2] == b"\x00\x00" and 1 <= head[3] <= 4:
        return read_idx(path, **options)
    raise DataError(
        f"{path}: content matches no supported format (first bytes {head[:8].hex(' ')}); "
        f"supported: {_SUPPORTED}"
    )


def _folder_split(path: Path, split: str, split_folders: set[str]) -> str | None:
    """The ``split`` argument for an image folder: None when the folder is not split at all."""
    if split_folders:
        return split
    if split == "train":
        return None
    raise DataError(
        f"{path}: has no split folders ({', '.join(sorted(_SPLIT_FOLDERS))}), so it holds only the "
        f"'train' split, got split={split!r}"
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


def _first_tar_file(path: Path) -> PurePosixPath | None:
    """Path of the first regular file in a tar archive, reading only up to it."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if member.isfile():
                    return PurePosixPath(member.name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: not a readable tar archive ({error})") from None
    return None
