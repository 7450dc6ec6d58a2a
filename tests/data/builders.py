"""Writers of small dataset files in each supported format, shared by the data tests."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = [f"class{k}" for k in range(10)]


def random_images(count: int, channels: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, channels, height, width), np.uint8)


def write_pickle(path: Path, obj: object, *, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def cifar_batch(images: np.ndarray, labels: dict[str, list[int]], *, bytes_keys: bool) -> dict:
    """A batch laid out as CIFAR's: rows of R, G, B planes; keys as bytes (Python 2) or str."""
    entries = {"data": images.reshape(len(images), -1), "filenames": [b"x.png"] * len(images)}
    entries.update(labels)
    return {(key.encode() if bytes_keys else key): value for key, value in entries.items()}


def write_cifar10(
    root: Path, *, per_batch: int = 3, bytes_keys: bool = True, protocol: int = 2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``root/cifar-10-batches-py``; return ``{split: (images, labels)}``."""
    folder = root / "cifar-10-batches-py"
    expected = {}
    for split, names in (
        ("train", [f"data_batch_{i}" for i in range(1, 6)]),
        ("test", ["test_batch"]),
    ):
        images, labels = [], []
        for index, name in enumerate(names):
            seed = 100 * (split == "test") + index
            batch_images = random_images(per_batch, 3, 32, 32, seed)
            batch_labels = np.random.default_rng(seed).integers(0, 10, per_batch).tolist()
            batch = cifar_batch(batch_images, {"labels": batch_labels}, bytes_keys=bytes_keys)
            write_pickle(folder / name, batch, protocol=protocol)
            images.append(batch_images)
            labels.extend(batch_labels)
        expected[split] = (np.concatenate(images), np.array(labels))
    meta = {b"label_names" if bytes_keys else "label_names": [n.encode() for n in CIFAR10_NAMES]}
    write_pickle(folder / "batches.meta", meta, protocol=protocol)
    return expected


def write_cifar100(
    root: Path, *, count: int = 4
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Write ``root/cifar-100-python``; return ``{split: (images, fine, coarse)}``."""
    folder = root / "cifar-100-python"
    expected = {}
    for seed, split in enumerate(("train", "test")):
        rng = np.random.default_rng(seed)
        images = random_images(count, 3, 32, 32, seed + 7)
        fine = rng.integers(0, 100, count)
        coarse = rng.integers(0, 20, count)
        labels = {"fine_labels": fine.tolist(), "coarse_labels": coarse.tolist()}
        write_pickle(folder / split, cifar_batch(images, labels, bytes_keys=True))
        expected[split] = (images, fine, coarse)
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    write_pickle(folder / "meta", meta)
    return expected


def make_tar(source: Path, archive: Path, *, mode: str = "w:gz") -> Path:
    """Pack the contents of ``source`` (paths relative to it) into ``archive``."""
    with tarfile.open(archive, mode) as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    return archive


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype[type_code]).tobytes()


def write_bytes(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def imagenet_rows(images: np.ndarray) -> np.ndarray:
    """Downsampled ImageNet's layout: each row the R, G, B planes of one image in turn."""
    return images.reshape(len(images), -1)


def encode_image(array: np.ndarray, image_format: str) -> bytes:
    """Encode an (H, W, C) or (H, W) uint8 array as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    squeezed = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    Image.fromarray(squeezed).save(buffer, format=image_format, quality=95)
    return buffer.getvalue()


def write_image(path: Path, array: np.ndarray, image_format: str = "PNG") -> Path:
    return write_bytes(path, encode_image(array, image_format))
