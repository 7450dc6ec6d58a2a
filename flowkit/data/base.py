"""The in-memory image dataset every reader returns, the error every reader raises, its splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowkit.errors import FlowkitError

__all__ = ["DataError", "ImageData", "split_images"]


class DataError(FlowkitError, ValueError):
    """A dataset file is missing, corrupt, truncated or inconsistent.

    The message names the file (and the archive member, where there is one) and says what was
    expected and what was found. A subclass of ValueError, so ``except ValueError`` catches it.

    Example:
        >>> isinstance(DataError("images.idx: truncated payload"), ValueError)
        True
    """


@dataclass(frozen=True, eq=False)
class ImageData:
    r"""A whole image dataset held in memory as one uint8 tensor.

    Images keep their stored integer values; :func:`flowkit.data.to_model_input` turns them into
    the model's continuous input. Equality is identity: compare the tensors to compare contents.

    Args:
        images: uint8 tensor of shape ``(N, C, H, W)``; stored contiguous.
        labels: int64 tensor of shape ``(N,)`` with values in ``[0, len(classes))``, or None for
            an unlabelled dataset.
        source: Where the images came from (a path, an archive, a name), used in messages.
        classes: Class names, ``classes[k]`` naming label ``k``, or None when unknown.

    Raises:
        DataError: If the shapes, dtypes or label range are inconsistent.

    Example:
        >>> data = ImageData(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), None, "zeros")
        >>> len(data), data.image_shape
        (4, (1, 28, 28))
    """

    images: Tensor
    labels: Tensor | None
    source: str
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        images, labels, source = self.images, self.labels, self.source
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"{source}: expected images as a uint8 tensor of shape (N, C, H, W), got "
                f"{_describe(images)}"
            )
        if not images.is_contiguous():
            object.__setattr__(self, "images", images.contiguous())
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
                raise DataError(
                    f"{source}: expected labels as an int64 tensor of shape (N,), got "
                    f"{_describe(labels)}"
                )
            if labels.shape[0] != images.shape[0]:
                raise DataError(
                    f"{source}: expected as many labels as images ({images.shape[0]}), got "
                    f"{labels.shape[0]} labels"
                )
            if labels.numel() and int(labels.min()) < 0:
                raise DataError(
                    f"{source}: expected non-negative labels, got minimum {int(labels.min())}"
                )
            if self.classes is not None and labels.numel():
                top = int(labels.max())
                if top >= len(self.classes):
                    raise DataError(
                        f"{source}: expected labels below the number of classes "
                        f"({len(self.classes)}), got label {top}"
                    )
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"int64{tuple(self.labels.shape)}"
        classes = "None" if self.classes is None else f"{len(self.classes)} classes"
        return (
            f"ImageData(images=uint8{tuple(self.images.shape)}, labels={labels}, "
            f"source={self.source!r}, classes={classes})"
        )


def split_images(data: ImageData, test_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Hold out a seeded random share of the images as a test set; the same seed, the same split.

    The test part gets ``round(test_fraction * N)`` images; both parts keep the stored order, and
    labels and class names go with their images. The split depends only on ``N``,
    ``test_fraction`` and ``seed``, so a run that records them finds the same images again.

    Args:
        data: The images to split (usually a dataset's training split).
        test_fraction: Share of images held out, in ``(0, 1)``.
        seed: Seed of the permutation (``numpy.random.default_rng``).

    Returns:
        ``(train, test)``, disjoint, together all images.

    Raises:
        DataError: If either part would be empty.

    Example:
        >>> data = ImageData(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), None, "ten")
        >>> train, test = split_images(data, 0.3, seed=0)
        >>> len(train), len(test)
        (7, 3)
    """
    if not isinstance(data, ImageData):
        raise TypeError(f"split_images expects ImageData, got {type(data).__name__}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"split_images expects test_fraction as a float, got {test_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split_images expects 0 < test_fraction < 1, got {test_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"split_images expects seed as an int, got {seed!r}")
    total = len(data)
    test_size = round(test_fraction * total)
    if not 0 < test_size < total:
        raise DataError(
            f"{data.source}: test_fraction={test_fraction} of {total} images gives "
            f"{total - test_size} training and {test_size} test images; each part needs at least "
            "one"
        )
    order = np.random.default_rng(seed).permutation(total)
    held_out = f"{test_fraction:g} held out with seed {seed}"
    parts = []
    for indices, name in (
        (order[test_size:], f"training part, {held_out}"),
        (order[:test_size], held_out),
    ):
        index = torch.from_numpy(np.sort(indices))
        labels = None if data.labels is None else data.labels[index]
        parts.append(ImageData(data.images[index], labels, f"{data.source} ({name})", data.classes))
    return parts[0], parts[1]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__
