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
# Names used by MNIST, Fashion-MNIST and KMNIST ("t10k" or "test" for the test split), with "-"
# or "." before "idx" and an optional ".gz"; EMNIST puts its subset first ("emnist-balanced-...").
_FILE_PATTERN = re.compile(
    r"^(?:(?P<subset>.+?)-)?(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx[13]-ubyte"
    r"(?:\.gz)?$"
)
# EMNIST stores each image transposed (column by column) relative to MNIST.
_TRANSPOSED_PREFIX = "emnist"


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
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    transpose: bool = False,
) -> ImageData:
    """Read MNIST-style images (idx3, uint8) and optional labels (idx1, uint8).

    Args:
        images: idx3 file of shape ``(N, H, W)``, e.g. ``train-images-idx3-ubyte.gz``.
        labels: idx1 file of shape ``(N,)``, or None for an unlabelled set.
        transpose: Swap the rows and columns of every image. EMNIST stores its images transposed
            (column by column); :func:`read_idx_dir` sets this for files named ``emnist-*``.

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
    if transpose:
        pixels = np.ascontiguousarray(pixels.transpose(0, 2, 1))
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


def read_idx_dir(
    directory: str | os.PathLike[str], *, split: str = "train", subset: str | None = None
) -> ImageData:
    """Read one split of an MNIST-style directory of idx files.

    Looks for ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (``t10k-`` or
    ``test-`` for the test split; ``.gz`` or not), as published for MNIST, Fashion-MNIST and
    KMNIST. EMNIST's files carry their subset first (``emnist-balanced-train-images-idx3-ubyte``)
    and store images transposed; they are returned upright. Labels are optional: without a labels
    file the dataset is unlabelled.

    Args:
        directory: Folder holding the idx files.
        split: ``"train"`` or ``"test"``.
        subset: The name before ``train-``/``test-`` (``"emnist-balanced"``), needed only when the
            folder holds several datasets, as EMNIST's ``gzip`` folder holds six.

    Returns:
        ImageData with images ``(N, 1, H, W)``.

    Raises:
        DataError: If the split's images file is missing or ambiguous, a file is invalid, or the
            folder holds several datasets and ``subset`` names none of them.

    Example (needs the dataset files)::

        read_idx_dir("fashion-mnist", split="test").images.shape
        # torch.Size([10000, 1, 28, 28])
        read_idx_dir("emnist/gzip", split="test", subset="emnist-balanced").images.shape
        # torch.Size([18800, 1, 28, 28])
    """
    check_split("read_idx_dir", split)
    folder = to_path("read_idx_dir", directory)
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a directory of idx files, got a file")
    name = _pick_subset(folder, subset)
    found = _idx_datasets(folder).get(name, {})
    images = found.get((split, "images"), [])
    if len(images) != 1:
        problem = "no" if not images else f"{len(images)} candidate"
        raise DataError(
            f"{folder}: expected one {split} images file (like {_example(name, split, 'images')}), "
            f"found {problem} ({', '.join(p.name for p in images) or 'none'})"
        )
    labels = found.get((split, "labels"), [])
    if len(labels) > 1:
        raise DataError(
            f"{folder}: expected at most one {split} labels file, found "
            f"{', '.join(p.name for p in labels)}"
        )
    return read_idx(images[0], labels[0] if labels else None, transpose=_transposed(name))


def _idx_datasets(folder: Path) -> dict[str, dict[tuple[str, str], list[Path]]]:
    """The idx files in ``folder`` by subset name ("" for MNIST's), then ``(split, kind)``."""
    found: dict[str, dict[tuple[str, str], list[Path]]] = {}
    for entry in sorted(folder.iterdir()):
        match = _FILE_PATTERN.match(entry.name)
        if match is None or not entry.is_file():
            continue
        split = "train" if match["split"] == "train" else "test"
        files = found.setdefault(match["subset"] or "", {})
        files.setdefault((split, match["kind"]), []).append(entry)
    return found


def _pick_subset(folder: Path, subset: str | None) -> str:
    """The one dataset of ``folder`` to read: ``subset``, or the only one there is."""
    names = sorted(_idx_datasets(folder))
    if subset is None and len(names) == 1:
        return names[0]
    if subset is not None and subset in names:
        return subset
    listed = ", ".join(_display(name) for name in names) or "none"
    if subset is not None:
        raise DataError(f"{folder}: expected idx files of the subset {subset!r}, found {listed}")
    if not names:
        raise DataError(f"{folder}: expected idx files like {_example('', 'train', 'images')}")
    raise DataError(
        f"{folder}: holds {len(names)} idx datasets ({listed}); point at one of them by its "
        f"training images file, e.g. {folder / _example(names[0], 'train', 'images', gz=True)}"
    )


def _idx_splits(folder: Path, subset: str | None = None) -> frozenset[str]:
    """The splits (``"train"``, ``"test"``) with an images file in ``folder``."""
    found = _idx_datasets(folder).get(_pick_subset(folder, subset), {})
    return frozenset(split for split, kind in found if kind == "images")


def _idx_name(path: Path) -> tuple[str, str, str] | None:
    """``(subset, split, kind)`` from an idx file's distributed name, or None for another name."""
    match = _FILE_PATTERN.match(path.name)
    if match is None:
        return None
    return match["subset"] or "", "train" if match["split"] == "train" else "test", match["kind"]


def _read_idx_file(path: Path) -> ImageData:
    """One idx images file alone, with the one labels file of the same name beside it, if any."""
    named = _idx_name(path)
    if named is None:
        return read_idx(path)
    subset, split, _ = named
    labels = _idx_datasets(path.parent).get(subset, {}).get((split, "labels"), [])
    return read_idx(path, labels[0] if len(labels) == 1 else None, transpose=_transposed(subset))


def _transposed(subset: str) -> bool:
    return subset.split("-")[0].lower() == _TRANSPOSED_PREFIX


def _display(subset: str) -> str:
    return subset or "train-*/t10k-*"


def _example(subset: str, split: str, kind: str, *, gz: bool = False) -> str:
    prefix = "train" if split == "train" else "t10k"
    if subset:
        prefix = f"{subset}-{'train' if split == 'train' else 'test'}"
    ending = ".gz" if gz else "[.gz]"
    return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte{ending}"
