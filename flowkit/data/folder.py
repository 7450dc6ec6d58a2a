"""Reader for folders and tar archives of PNG/JPEG images, labelled by class sub-folder."""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image

from flowkit.data._io import to_path
from flowkit.data.base import DataError, ImageData

__all__ = ["IMAGE_EXTENSIONS", "read_image_folder"]

#: File name endings read as images; other files (notes, label lists) are skipped.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Pillow only tries these decoders, whatever the file claims to be.
_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# Folder names that mean a split rather than a class; seeing them without ``split=`` is an error.
_SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})
# Images moved into the output tensor per step: large enough for numpy to do the work, small
# enough that the decoded list and the output never both hold everything.
_CHUNK = 1024
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC

_Source = Union[Path, BinaryIO]
# (path parts below the root or split folder, name for messages, decoded HWC or HW array)
_Record = tuple[tuple[str, ...], str, np.ndarray]


def read_image_folder(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    size: int | None = None,
    grayscale: bool = False,
) -> ImageData:
    """Read every image of a folder or a tar archive, labelling them by class sub-folder.

    Two layouts are understood, below ``path`` (and ``split``, when given):

    - ``<class>/**/<image>``: labelled; ``classes`` is the sorted list of class folder names and
      an image's label is its folder's index in it (the CIFAR-10 JPEG export,
      ``train/<class>/*.jpg``, read with ``split="train"``).
    - ``<image>``: unlabelled (LSUN or CelebA-HQ exports).

    A single folder that holds everything is a wrapper, not a class, and is looked through, so
    an archive of ``celeba/*.png`` reads as unlabelled. Files whose names do not end in one of
    :data:`IMAGE_EXTENSIONS` and hidden files (``.*``, ``__MACOSX``) are skipped. Images are
    returned in the order of their sorted paths. A tar (``.tar``, ``.tar.gz``, ...) is read member
    by member in one pass, without extracting anything to disk.

    Images are decoded with Pillow as RGB (or grey with ``grayscale=True``). With ``size``, the
    shorter side is resized to ``size`` (bicubic, antialiased) and the centre ``size x size``
    square is cropped; JPEGs are then decoded at a reduced scale when they are large enough,
    which is much faster. Without ``size`` all images must already share one size.

    Args:
        path: A directory or a tar archive (optionally gzip, bz2 or xz compressed).
        split: Sub-folder to read (e.g. ``"train"`` or ``"test"``), or None for everything. In an
            archive the split folder may sit inside one wrapper folder.
        size: Side of the square output images, or None to keep the stored size.
        grayscale: Decode to one grey channel instead of three RGB channels.

    Returns:
        ImageData with images ``(N, C, H, W)`` uint8, ``C`` = 1 or 3; labels and ``classes``
        when the layout has class folders, else None.

    Raises:
        DataError: If a file cannot be decoded, images differ in size, the layout mixes loose
            images and class folders, or no image is found. The message names the file (and the
            archive member).

    Example (needs the dataset files)::

        data = read_image_folder("cifar10-jpeg.tar.gz", split="test")
        data.images.shape, data.classes[:2]
        # (torch.Size([10000, 3, 32, 32]), ('airplane', 'automobile'))
    """
    root = to_path("read_image_folder", path)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"read_image_folder expects size as a positive int or None, got {size!r}")
    if split is not None and (not split or "/" in split or split in (".", "..")):
        raise ValueError(f"read_image_folder expects split as a folder name, got {split!r}")
    mode = "L" if grayscale else "RGB"
    if root.is_dir():
        base = root if split is None else root / split
        if not base.is_dir():
            found = sorted(entry.name for entry in root.iterdir() if not _hidden(entry.name))
            raise DataError(
                f"{root}: expected a sub-folder {split!r} for the split, found {_listing(found)}"
            )
        records = [
            (parts, where, _decode(file, where, size, mode))
            for parts, where, file in _walk_directory(base)
        ]
    else:
        records = _read_tar(root, split, size, mode)
    return _assemble(records, f"{root}" if split is None else f"{root} (split {split!r})")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_image_name(parts: tuple[str, ...]) -> bool:
    return (
        bool(parts)
        and not any(_hidden(part) for part in parts)
        and parts[-1].lower().endswith(IMAGE_EXTENSIONS)
    )


def _listing(names: list[str], limit: int = 8) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _walk_directory(base: Path) -> Iterator[tuple[tuple[str, ...], str, Path]]:
    for directory, subdirectories, files in os.walk(base):
        subdirectories[:] = sorted(name for name in subdirectories if not _hidden(name))
        relative = Path(directory).relative_to(base).parts
        for name in sorted(files):
            parts = (*relative, name)
            if _is_image_name(parts):
                file = Path(directory, name)
                yield parts, str(file), file


def _read_tar(archive: Path, split: str | None, size: int | None, mode: str) -> list[_Record]:
    records: list[_Record] = []
    wrappers: set[str] = set()
    top_level: set[str] = set()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = tuple(part for part in member.name.split("/") if part not in ("", "."))
                if parts:
                    top_level.add(parts[0])
                if not member.isfile() or not _is_image_name(parts):
                    continue
                if split is not None:
                    if parts[0] == split:
                        parts = parts[1:]
                    elif len(parts) > 2 and parts[1] == split:
                        wrappers.add(parts[0])
                        parts = parts[2:]
                    else:
                        continue
                where = f"{archive}:{member.name}"
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                records.append((parts, where, _decode(io.BytesIO(data), where, size, mode)))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{archive}: expected an image directory or a (compressed) tar archive, could not "
            f"read it as a tar archive ({type(error).__name__}: {error})"
        ) from None
    if len(wrappers) > 1:
        raise DataError(
            f"{archive}: expected one folder holding the split {split!r}, found it in "
            f"{_listing(sorted(wrappers))}"
        )
    if split is not None and not records:
        raise DataError(
            f"{archive}: expected images under {split!r}/ (or <folder>/{split}/), found top-level "
            f"entries {_listing(sorted(top_level))}"
        )
    return records


def _decode(source: _Source, where: str, size: int | None, mode: str) -> np.ndarray:
    try:
        with Image.open(source, formats=_FORMATS) as opened:
            if opened.mode.startswith(("I", "F")):
                raise DataError(f"{where}: expected an 8-bit image, got Pillow mode {opened.mode}")
            if size is not None:
                # JPEG can decode at 1/2, 1/4 or 1/8 scale; draft keeps both sides >= size.
                opened.draft(mode, (size, size))
            opened.load()
            image = opened if opened.mode == mode else opened.convert(mode)
            if size is not None:
                image = _resize_and_crop(image, size)
            return np.asarray(image)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{where}: cannot decode image ({type(error).__name__}: {error})") from None


def _resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    target = (max(size, round(width * scale)), max(size, round(height * scale)))
    if target != image.size:
        image = image.resize(target, _BICUBIC)
    left, top = (target[0] - size) // 2, (target[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def _shared_depth(records: list[_Record]) -> int:
    """How many leading folders every image shares (wrappers, not classes)."""
    shortest = min(len(parts) for parts, _, _ in records)
    first = records[0][0]
    depth = 0
    while depth < shortest - 1 and all(parts[depth] == first[depth] for parts, _, _ in records):
        depth += 1
    return depth


def _assemble(records: list[_Record], source: str) -> ImageData:
    """Check the layout and sizes, then move the decoded images into one tensor.

    ``records`` is emptied on the way, so that at most one copy of the pixels is alive at a time.
    """
    if not records:
        raise DataError(f"{source}: expected images ({', '.join(IMAGE_EXTENSIONS)}), found none")
    records.sort(key=lambda record: record[0])
    depth = _shared_depth(records)
    paths = [parts[depth:] for parts, _, _ in records]
    loose = [where for path, (_, where, _) in zip(paths, records) if len(path) == 1]
    nested = [where for path, (_, where, _) in zip(paths, records) if len(path) > 1]
    if loose and nested:
        raise DataError(
            f"{source}: expected either class folders or loose images, found both (e.g. "
            f"{loose[0]} and {nested[0]})"
        )
    labels, classes = None, None
    if nested:
        classes = sorted({path[0] for path in paths})
        if set(classes) <= _SPLIT_NAMES and all(len(path) > 2 for path in paths):
            raise DataError(
                f"{source}: the folders {', '.join(classes)} look like dataset splits, not "
                "classes; pass split= to read one of them"
            )
        index = {name: label for label, name in enumerate(classes)}
        labels = torch.tensor([index[path[0]] for path in paths], dtype=torch.int64)
    _, first_where, first = records[0]
    for _, where, array in records:
        if array.shape != first.shape:
            raise DataError(
                f"{where}: expected an image of size {_size(first)} like {first_where}, got "
                f"{_size(array)}; pass size= to resize and crop every image to one size"
            )
    height, width = first.shape[:2]
    channels = first.shape[2] if first.ndim == 3 else 1
    pixels = np.empty((len(records), channels, height, width), np.uint8)
    # From the last chunk back, so that each chunk's records can be dropped from the list's end.
    for start in reversed(range(0, len(records), _CHUNK)):
        chunk = np.stack([array for _, _, array in records[start:]])
        pixels[start : start + len(chunk)] = chunk.reshape(-1, height, width, channels).transpose(
            0, 3, 1, 2
        )
        del records[start:]
    images = torch.from_numpy(pixels)
    return ImageData(images, labels, source, None if classes is None else tuple(classes))


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"
