"""The in-memory image dataset every reader returns, and the error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit.errors import FlowkitError

__all__ = ["DataError", "ImageData"]


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


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__
