"""Readers for the CIFAR-10 and CIFAR-100 python pickle batches (directory or original tarball)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import numpy as np
import torch

from flowkit.data._io import check_split, labels_tensor, read_bytes, to_path
from flowkit.data.base import DataError, ImageData

__all__ = ["read_cifar10", "read_cifar100"]

_SIDE = 32
_ROW_LENGTH = 3 * _SIDE * _SIDE

# What unpickling a CIFAR batch needs: numpy array reconstruction (under numpy 1.x and 2.x module
# names, for every pickle protocol) and ``_codecs.encode``, which protocol 2 uses for bytes.
# Anything else is refused, so a tampered file cannot call arbitrary code.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


def read_cifar10(path: str | os.PathLike[str], *, split: str = "train") -> ImageData:
    """Read CIFAR-10 from its python pickle batches.

    The training split is ``data_batch_1`` ... ``data_batch_5`` (50,000 images), the test split
    ``test_batch`` (10,000). Each row of a batch's ``data`` holds the red, green and blue 32x32
    planes in turn, so rows reshape directly to ``(3, 32, 32)``. Class names come from
    ``batches.meta`` when it is present.

    Batches are pickles, and unpickling can run code. Only numpy arrays, lists, dicts and strings
    are accepted (any other global is refused with a DataError), but read only files you trust.

    Args:
        path: The extracted ``cifar-10-batches-py`` directory, its parent, or the original
            ``cifar-10-python.tar.gz`` (read in memory, never extracted).
        split: ``"train"`` or ``"test"``.

    Returns:
        ImageData with images ``(N, 3, 32, 32)`` uint8 and labels in ``[0, 10)``.

    Raises:
        DataError: If a batch is missing, corrupt, or has the wrong shape, dtype or label count.

    References:
        Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009).

    Example (needs the dataset files)::

        data = read_cifar10("cifar-10-batches-py", split="test")
        data.images.shape
        # torch.Size([10000, 3, 32, 32])
    """
    check_split("read_cifar10", split)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches, meta, source = _load(path, "cifar-10-batches-py", names, "batches.meta")
    return _assemble(batches, names, source, "labels", 10, meta, "label_names")


def read_cifar100(
    path: str | os.PathLike[str], *, split: str = "train", label_kind: str = "fine"
) -> ImageData:
    """Read CIFAR-100 from its python pickle batches.

    The files are ``train`` (50,000 images) and ``test`` (10,000), laid out as CIFAR-10's batches,
    each with 100 fine labels and 20 coarse (superclass) labels. Class names come from ``meta``.

    Batches are pickles, and unpickling can run code. Only numpy arrays, lists, dicts and strings
    are accepted (any other global is refused with a DataError), but read only files you trust.

    Args:
        path: The extracted ``cifar-100-python`` directory, its parent, or the original
            ``cifar-100-python.tar.gz`` (read in memory, never extracted).
        split: ``"train"`` or ``"test"``.
        label_kind: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

    Returns:
        ImageData with images ``(N, 3, 32, 32)`` uint8 and labels in ``[0, 100)`` or ``[0, 20)``.

    Raises:
        DataError: If a file is missing, corrupt, or has the wrong shape, dtype or label count.

    References:
        Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009).

    Example (needs the dataset files)::

        data = read_cifar100("cifar-100-python", label_kind="coarse")
        len(data.classes)
        # 20
    """
    check_split("read_cifar100", split)
    if label_kind not in ("fine", "coarse"):
        raise ValueError(f"read_cifar100 expects label_kind 'fine' or 'coarse', got {label_kind!r}")
    names = [split]
    batches, meta, source = _load(path, "cifar-100-python", names, "meta")
    limit = 100 if label_kind == "fine" else 20
    return _assemble(
        batches, names, source, f"{label_kind}_labels", limit, meta, f"{label_kind}_label_names"
    )


_Batches = dict[str, tuple[dict[str, Any], str]]
_Loaded = tuple[_Batches, Optional[dict[str, Any]], str]


def _load(path: str | os.PathLike[str], folder: str, names: list[str], meta_name: str) -> _Loaded:
    """Unpickle the named batches (and the meta file, if any) from a directory or a tarball.

    Returns ``{name: (batch, where)}`` with ``where`` naming the file for messages, the meta dict
    or None, and a description of the source.
    """
    root = to_path("CIFAR reader", path)
    if root.is_dir():
        return _load_directory(root, folder, names, meta_name)
    return _load_tar(root, folder, names, meta_name)


def _load_directory(root: Path, folder: str, names: list[str], meta_name: str) -> _Loaded:
    if (root / folder).is_dir():
        root = root / folder
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"{root}: expected the CIFAR batch file(s) {', '.join(names)}, missing "
            f"{', '.join(missing)}"
        )
    batches = {}
    for name in names:
        file = root / name
        batches[name] = (_unpickle(read_bytes(file, decompress=False), str(file)), str(file))
    meta_file = root / meta_name
    meta = None
    if meta_file.is_file():
        meta = _unpickle(read_bytes(meta_file, decompress=False), str(meta_file))
    return batches, meta, str(root)


def _load_tar(archive: Path, folder: str, names: list[str], meta_name: str) -> _Loaded:
    wanted = {*names, meta_name}
    found: _Batches = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                member_path = PurePosixPath(member.name)
                # Only the batch files themselves are unpickled: the member must sit at the top
                # or directly inside the expected folder, never anywhere else in the archive.
                if not member.isfile() or member_path.name not in wanted:
                    continue
                if member_path.parent.name not in ("", folder):
                    continue
                where = f"{archive}:{member.name}"
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                found[member_path.name] = (_unpickle(data, where), where)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"{archive}: expected a CIFAR directory or a (gzipped) tar archive of one, "
            f"could not read it as a tar archive ({error})"
        ) from None
    missing = [name for name in names if name not in found]
    if missing:
        expected = ", ".join(f"{folder}/{name}" for name in names)
        raise DataError(
            f"{archive}: expected the CIFAR batch member(s) {expected}, missing "
            f"{', '.join(missing)}"
        )
    meta = found.pop(meta_name)[0] if meta_name in found else None
    return found, meta, str(archive)


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR batch holds only numpy arrays, "
                "lists and strings"
            )
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        # CIFAR's batches were pickled by Python 2; "bytes" keeps their str objects as bytes.
        loaded = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - corrupt pickles fail in many ways
        raise DataError(
            f"{where}: not a readable CIFAR pickle batch ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(loaded).__name__}")
    return {_text(key): value for key, value in loaded.items()}


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _assemble(
    batches: _Batches,
    names: list[str],
    source: str,
    label_key: str,
    limit: int,
    meta: dict[str, Any] | None,
    names_key: str,
) -> ImageData:
    images, labels = [], []
    for name in names:
        batch, where = batches[name]
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            got = (
                f"array of dtype {data.dtype} and shape {data.shape}"
                if isinstance(data, np.ndarray)
                else type(data).__name__
            )
            raise DataError(f"{where}: expected 'data' as a uint8 array (N, 3072), got {got}")
        if data.shape[1] != _ROW_LENGTH:
            raise DataError(
                f"{where}: expected 'data' rows of {_ROW_LENGTH} bytes (3x32x32), got "
                f"{data.shape[1]}"
            )
        if label_key not in batch:
            raise DataError(
                f"{where}: expected a '{label_key}' entry, found keys {sorted(map(str, batch))}"
            )
        labels.append(labels_tensor(batch[label_key], count=len(data), where=where, limit=limit))
        images.append(data.reshape(-1, 3, _SIDE, _SIDE))
    classes = None
    if meta is not None and names_key in meta:
        classes = tuple(str(_text(item)) for item in meta[names_key])
        if len(classes) != limit:
            raise DataError(
                f"{source}: expected {limit} class names under '{names_key}' in the meta file, "
                f"got {len(classes)}"
            )
    # np.concatenate always copies, so the tensor owns writable memory even for one batch.
    return ImageData(torch.from_numpy(np.concatenate(images)), torch.cat(labels), source, classes)
