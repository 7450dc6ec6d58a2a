"""Reader for downsampled ImageNet (Imagenet32 / Imagenet64) npz batches."""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from flowkit.data._io import check_split, labels_tensor, to_path
from flowkit.data.base import DataError, ImageData

__all__ = ["read_imagenet_npz"]

_CLASSES = 1000
_TRAIN_PATTERN = re.compile(r"^train_data_batch_(\d+)\.npz$")
_VAL_NAME = "val_data.npz"


def read_imagenet_npz(path: str | os.PathLike[str], *, split: str = "train") -> ImageData:
    r"""Read downsampled ImageNet from its npz batches (Chrabaszcz et al.'s release).

    Each file holds ``data``, a uint8 array ``(N, 3 * S * S)`` whose rows are the red, green and
    blue ``S x S`` planes in turn (``S`` = 32 or 64, or any square size), and ``labels``, 1-based
    class indices in ``[1, 1000]``; they are returned 0-based. The training set comes as
    ``train_data_batch_1.npz`` ... ``train_data_batch_10.npz`` and the validation set as
    ``val_data.npz``. Files are read with ``allow_pickle=False``.

    Args:
        path: One npz file, or a directory holding the batches: files of both splits may share
            it, or sit in its sub-folders as the release unpacks them (``Imagenet32_train_npz/``,
            ``Imagenet32_val_npz/``).
        split: For a directory, ``"train"`` (every ``train_data_batch_*.npz`` in numeric order) or
            ``"test"`` / ``"val"`` (``val_data.npz``; the official test labels are unpublished, so
            the validation set serves as test set). Ignored for a single file.

    Returns:
        ImageData with images ``(N, 3, S, S)`` uint8 and labels in ``[0, 1000)``.

    Raises:
        DataError: If a file is missing, not an npz of this layout, or its labels do not match.

    References:
        Chrabaszcz, Loshchilov & Hutter, A Downsampled Variant of ImageNet as an Alternative to
        the CIFAR datasets (2017); used at 32x32 and 64x64 by Glow (Kingma & Dhariwal, 2018).

    Example (needs the dataset files)::

        data = read_imagenet_npz("Imagenet32_val_npz", split="val")
        data.images.shape
        # torch.Size([50000, 3, 32, 32])
    """
    check_split("read_imagenet_npz", split, ("train", "test", "val"))
    root = to_path("read_imagenet_npz", path)
    files = _batch_files(root, split) if root.is_dir() else [root]
    parts = [_read_batch(file) for file in files]
    sides = {images.shape[-1] for images, _ in parts}
    if len(sides) > 1:
        raise DataError(
            f"{root}: expected batches of one image size, got sizes {sorted(sides)} in "
            f"{', '.join(f.name for f in files)}"
        )
    images = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    labels = torch.cat([labels for _, labels in parts])
    return ImageData(images, labels, str(root))


def _batch_files(root: Path, split: str) -> list[Path]:
    train, val = _find_batches(root)
    if split == "train":
        if not train:
            raise DataError(
                f"{root}: expected train_data_batch_<k>.npz files for split 'train', in it or in "
                "a sub-folder such as Imagenet32_train_npz/; found none"
            )
        return train
    if not val:
        raise DataError(
            f"{root}: expected {_VAL_NAME} for split {split!r}, in it or in a sub-folder such as "
            "Imagenet32_val_npz/; found none"
        )
    return val


def _find_batches(root: Path) -> tuple[list[Path], list[Path]]:
    """The training batches in numeric order and the validation file, in ``root`` or below it.

    The release unpacks to ``Imagenet32_train_npz/`` and ``Imagenet32_val_npz/``, and
    Imagenet64's training set comes in two parts (``train_data_batch_1..5`` and ``6..10``), so
    one level of sub-folders is searched too.
    """
    numbered: dict[int, list[Path]] = {}
    val: list[Path] = []
    folders = [root] + sorted(
        entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    for folder in folders:
        # Names first: a folder of many images costs a listing, not a stat per file.
        for entry in sorted(folder.iterdir()):
            match = _TRAIN_PATTERN.match(entry.name)
            if match is not None and entry.is_file():
                numbered.setdefault(int(match.group(1)), []).append(entry)
            elif entry.name == _VAL_NAME and entry.is_file():
                val.append(entry)
    repeated = [files for _, files in sorted(numbered.items()) if len(files) > 1]
    if repeated:
        raise DataError(
            f"{root}: expected each training batch once, found "
            f"{' and '.join(str(file.relative_to(root)) for file in repeated[0])}; point at one "
            "dataset's folder"
        )
    if len(val) > 1:
        raise DataError(
            f"{root}: expected one {_VAL_NAME}, found "
            f"{' and '.join(str(file.relative_to(root)) for file in val)}; point at one dataset's "
            "folder"
        )
    return [files[0] for _, files in sorted(numbered.items())], val


def _read_batch(file: Path) -> tuple[np.ndarray, torch.Tensor]:
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"{file}: not a readable npz file ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file}: expected an npz archive, got a single npy array")
    with archive:
        missing = [key for key in ("data", "labels") if key not in archive.files]
        if missing:
            raise DataError(
                f"{file}: expected arrays 'data' and 'labels', missing {', '.join(missing)} "
                f"(found {', '.join(archive.files) or 'none'})"
            )
        try:
            data, labels = archive["data"], archive["labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise DataError(
                f"{file}: corrupt npz member ({type(error).__name__}: {error})"
            ) from None
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(
            f"{file}: expected 'data' as uint8 of shape (N, 3*S*S), got {data.dtype} with shape "
            f"{data.shape}"
        )
    side = math.isqrt(data.shape[1] // 3)
    if data.shape[1] == 0 or 3 * side * side != data.shape[1]:
        raise DataError(
            f"{file}: expected 'data' rows of 3*S*S values (3072 for 32x32, 12288 for 64x64), got "
            f"{data.shape[1]}"
        )
    # Some exports store labels as a column (N, 1); the values are what matter.
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    converted = labels_tensor(labels, count=len(data), where=str(file))
    if converted.numel() and (int(converted.min()) < 1 or int(converted.max()) > _CLASSES):
        raise DataError(
            f"{file}: expected 1-based labels in [1, {_CLASSES}], got values in "
            f"[{int(converted.min())}, {int(converted.max())}]"
        )
    return data.reshape(-1, 3, side, side), converted - 1
