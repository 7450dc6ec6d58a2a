"""The small Fashion-MNIST subset shipped inside the package, for examples, tests and smoke runs."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from flowkit.data._io import check_split
from flowkit.data.base import DataError, ImageData

__all__ = ["FASHION_MNIST_CLASSES", "load_bundled"]

#: Fashion-MNIST's class names; label ``k`` names ``FASHION_MNIST_CLASSES[k]``.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILE = "fashion-mnist-small.npz"


def load_bundled(split: str = "train") -> ImageData:
    """Load the Fashion-MNIST subset that ships with flowkit (no download, no network).

    5,000 training and 1,000 test images, 28x28 grey, class-balanced: the first 500 (training) or
    100 (test) images of each of the 10 classes in the original files' order, kept in that order.
    ``scripts/make_bundled_data.py`` rebuilds it from the original idx files. Fashion-MNIST is
    Copyright 2017 Zalando SE, MIT (Expat) licensed; the license ships beside the data as
    ``flowkit/data/bundled/LICENSE-fashion-mnist.txt``.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ImageData with images ``(N, 1, 28, 28)`` uint8, labels in ``[0, 10)`` and ``classes``
        :data:`FASHION_MNIST_CLASSES`.

    References:
        Xiao, Rasul & Vollgraf, Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
        Learning Algorithms (2017).

    Example:
        >>> data = load_bundled("test")
        >>> data.images.shape, data.classes[9]
        (torch.Size([1000, 1, 28, 28]), 'Ankle boot')
    """
    check_split("load_bundled", split)
    resource = resources.files("flowkit.data").joinpath("bundled").joinpath(_FILE)
    source = f"fashion-mnist-small:{split}"
    try:
        with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            images = archive[f"{split}_images"]
            labels = archive[f"{split}_labels"]
            classes = tuple(str(name) for name in archive["classes"])
    except (OSError, KeyError, ValueError) as error:
        raise DataError(
            f"{source}: the bundled file {_FILE} is missing or damaged ({error}); reinstall "
            "flowkit-torch or rebuild it with scripts/make_bundled_data.py"
        ) from None
    return ImageData(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        source,
        classes,
    )
