"""A torch Dataset over an in-memory ImageData."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from flowkit.data.base import ImageData

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Index an :class:`ImageData` as ``(image, label)`` pairs for a DataLoader.

    Images stay uint8 (a quarter of float32's memory and transfer); map a batch to the model's
    input with :func:`flowkit.data.to_model_input` after it reaches the device.

    Args:
        data: The images and labels.

    Shapes:
        ``image``: ``(C, H, W)`` uint8; ``label``: an int, ``-1`` for an unlabelled dataset.

    Example:
        >>> from flowkit.data import load_bundled
        >>> dataset = ImageDataset(load_bundled("test"))
        >>> image, label = dataset[0]
        >>> image.shape, image.dtype, label
        (torch.Size([1, 28, 28]), torch.uint8, 9)
    """

    def __init__(self, data: ImageData) -> None:
        if not isinstance(data, ImageData):
            raise TypeError(f"ImageDataset expects an ImageData, got {type(data).__name__}")
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        labels = self.data.labels
        return self.data.images[index], -1 if labels is None else int(labels[index])

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names of the underlying data, or None."""
        return self.data.classes

    def __repr__(self) -> str:
        return f"ImageDataset({self.data!r})"
