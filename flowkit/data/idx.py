"""Readers for MNIST-style idx files (images idx3, labels idx1), gzipped or not."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowkit.data._io import check_split, labels_tensor, read_bytes, to_path
from flowkit.data.base import DataError, ImageData

__all__ = ["read_idx", "read_idx_array", "read_idx_dir"]

# The idx type codes, stored big-endian (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_HEADER = 4
_DIM_BYTES = 4
# Names used by MNIST, Fashion-MNIST, KMNIST and EMNIST ("t10k" or "test" for the test split),
# with "-" or "." before "idx" and an optional ".gz".
_FILE_PATTERN = re.compile(r"^(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx[13]-ubyte")


def read_idx_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one idx file into a numpy array, gunzipping it if needed.

    An idx file is a 4-byte magic number ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32
    sizes, then the values in C order. Gzip is detected from the content (magic bytes ``1f 8b``),
    not from the file name.

    Args:
        path: The idx file, plain or gzipped.

    Returns:
        An array of the stored shape, in native byte order.

    Raises:
        DataError: If the magic number, type code or sizes are invalid, or the payload length
            differs from what the header announces.

    Example (needs the dataset files)::

        read_idx_array("train-labels-idx1-ubyte.gz").shape
        # (60000,)
    """
    file = to_path("read_idx_array", path)
    data = read_bytes(file)
    if len(data) < _HEADER:
        raise DataError(
            f"{file}: expected an idx header of at least {_HEADER} bytes, got {len(data)}"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{file}: not an idx file: expected magic bytes 00 00 <type> <ndim>, got "
            f"{data[:4].hex(' ')}"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise DataError(f"{file}: expected an idx type code in ({known}), got 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{file}: expected an idx file with at least 1 dimension, got 0")
    start = _HEADER + _DIM_BYTES * ndim
    if len(data) < start:
        raise DataError(
            f"{file}: truncated header: expected {start} bytes for {ndim} dimension sizes, got "
            f"{len(data)}"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=_HEADER))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - start
    if got != expected:
        problem = "truncated payload" if got < expected else "trailing bytes after the payload"
        raise DataError(
            f"{file}: {problem}: header announces shape {shape} of {dtype.name} "
            f"({expected} bytes), got {got} bytes"
        )
    array = np.frombuffer(data, dtype, offset=start).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(
    images: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> ImageData:
    """Read MNIST-style images (idx3, uint8) and optional labels (idx1, uint8).

    Args:
        images: idx3 file of shape ``(N, H, W)``, e.g. ``train-images-idx3-ubyte.gz``.
        labels: idx1 file of shape ``(N,)``, or None for an unlabelled set.

    Returns:
        ImageData with images ``(N, 1, H, W)`` uint8 and int64 labels (or None).

    Raises:
        DataError: If a file is not a valid idx file of the expected rank and type, or the label
            count differs from the image count.

    References:
        LeCun, Cortes & Burges, The MNIST database of handwritten digits (1998).

    Example (needs the dataset files)::

        images, labels = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
        read_idx(images, labels).images.shape
        # torch.Size([10000, 1, 28, 28])
    """
    pixels = read_idx_array(images)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise DataError(
            f"{images}: expected idx3 images of type ubyte with shape (N, H, W), got "
            f"{pixels.dtype} with shape {pixels.shape}"
        )
    tensor = torch.from_numpy(pixels).unsqueeze(1)
    if labels is None:
        return ImageData(tensor, None, str(images))
    values = read_idx_array(labels)
    if values.ndim != 1 or values.dtype != np.uint8:
        raise DataError(
            f"{labels}: expected idx1 labels of type ubyte with shape (N,), got {values.dtype} "
            f"with shape {values.shape}"
        )
    if len(values) != len(pixels):
        raise DataError(
            f"{labels}: expected as many labels as images in {images} ({len(pixels)}), got "
            f"{len(values)}"
        )
    label_tensor = labels_tensor(values, count=len(pixels), where=str(labels))
    return ImageData(tensor, label_tensor, str(images))


def read_idx_dir(directory: str | os.PathLike[str], *, split: str = "train") -> ImageData:
    """Read one split of an MNIST-style directory of idx files.

    Looks for ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (``t10k-`` or
    ``test-`` for the test split; ``.gz`` or not), as published for MNIST and Fashion-MNIST.
    Labels are optional: without a labels file the dataset is unlabelled.

    Args:
        directory: Folder holding the idx files.
        split: ``"train"`` or ``"test"``.

    Returns:
        ImageData with images ``(N, 1, H, W)``.

    Raises:
        DataError: If the split's images file is missing or ambiguous, or a file is invalid.

    Example (needs the dataset files)::

        read_idx_dir("fashion-mnist", split="test").images.shape
        # torch.Size([10000, 1, 28, 28])
    """
    check_split("read_idx_dir", split)
    folder = to_path("read_idx_dir", directory)
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a directory of idx files, got a file")
    found = _find_idx_files(folder)
    images = found.get((split, "images"), [])
    if len(images) != 1:
        problem = "no" if not images else f"{len(images)} candidate"
        raise DataError(
            f"{folder}: expected one {split} images file (like {_example(split, 'images')}), "
            f"found {problem} ({', '.join(p.name for p in images) or 'none'})"
        )
    labels = found.get((split, "labels"), [])
    if len(labels) > 1:
        raise DataError(
            f"{folder}: expected at most one {split} labels file, found "
            f"{', '.join(p.name for p in labels)}"
        )
    return read_idx(images[0], labels[0] if labels else None)


def _find_idx_files(folder: Path) -> dict[tuple[str, str], list[Path]]:
    """Map ``(split, "images" | "labels")`` to the idx files in ``folder`` with those names."""
    found: dict[tuple[str, str], list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        match = _FILE_PATTERN.match(entry.name)
        if match is None or not entry.is_file():
            continue
        split = "train" if match["split"] == "train" else "test"
        found.setdefault((split, match["kind"]), []).append(entry)
    return found


def _example(split: str, kind: str) -> str:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz]"
