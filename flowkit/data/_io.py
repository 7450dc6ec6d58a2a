"""Helpers shared by the dataset readers: argument checks, label conversion, file reading."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.data.base import DataError

__all__ = ["GZIP_MAGIC", "check_split", "labels_tensor", "read_bytes", "to_path"]

GZIP_MAGIC = b"\x1f\x8b"
_SPLITS = ("train", "test")


def to_path(reader: str, path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path that exists, or raise a DataError naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{reader} expects a path (str or os.PathLike), got {type(path).__name__}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{resolved}: no such file or directory")
    return resolved


def check_split(reader: str, split: str, allowed: Sequence[str] = _SPLITS) -> str:
    """Return ``split`` or raise a ValueError naming the allowed splits."""
    if split not in allowed:
        raise ValueError(f"{reader} expects split in {tuple(allowed)}, got {split!r}")
    return split


def read_bytes(path: Path, *, decompress: bool = True) -> bytes:
    """Read a whole file, gunzipping it when it starts with the gzip magic bytes."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error.strerror or error})") from None
    if decompress and data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({error})") from None
    return data


def labels_tensor(values: object, *, count: int, where: str, limit: int | None = None) -> Tensor:
    """Convert integer labels to int64, checking their number and range; errors name ``where``."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: labels are not a sequence of integers ({error})") from None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(
            f"{where}: expected a 1-D sequence of integer labels, got an array of dtype "
            f"{array.dtype} and shape {array.shape}"
        )
    if array.shape[0] != count:
        raise DataError(
            f"{where}: expected as many labels as images ({count}), got {array.shape[0]} labels"
        )
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or (limit is not None and high >= limit):
            bound = "" if limit is None else f" and < {limit}"
            raise DataError(f"{where}: expected labels >= 0{bound}, got values in [{low}, {high}]")
    return torch.from_numpy(array.astype(np.int64))
