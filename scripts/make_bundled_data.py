"""Rebuild flowkit's bundled Fashion-MNIST subset from the original idx.gz files.

Usage:
    python scripts/make_bundled_data.py path/to/fashion-mnist

The directory must hold train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. The subset keeps, for every class, the
first --train-per-class training images and the first --test-per-class test images in file order,
so it is class-balanced and the same on every run; images stay in their original relative order.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from flowkit.data.bundled import FASHION_MNIST_CLASSES
from flowkit.data.idx import read_idx_dir

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPOSITORY / "flowkit" / "data" / "bundled" / "fashion-mnist-small.npz"


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of every class, in increasing order."""
    keep = []
    for label in range(len(FASHION_MNIST_CLASSES)):
        where = np.flatnonzero(labels == label)
        if len(where) < per_class:
            raise SystemExit(f"class {label} has only {len(where)} examples, need {per_class}")
        keep.append(where[:per_class])
    return np.sort(np.concatenate(keep))


def main() -> None:
    """Select the subset, write the npz and print its size and digest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory of the Fashion-MNIST idx.gz files")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="npz file to write")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()

    arrays: dict[str, np.ndarray] = {"classes": np.array(FASHION_MNIST_CLASSES)}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        data = read_idx_dir(args.source, split=split)
        labels = data.labels.numpy()
        keep = first_per_class(labels, per_class)
        arrays[f"{split}_images"] = data.images.numpy()[keep, 0]
        arrays[f"{split}_labels"] = labels[keep].astype(np.uint8)
        print(f"{split}: {len(keep)} of {len(labels)} images")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
