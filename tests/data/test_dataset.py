import pytest
import torch
from torch.utils.data import DataLoader

from flowkit.data import ImageData, ImageDataset


def test_items_and_batches():
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5])
    dataset = ImageDataset(ImageData(images, labels, "memory", tuple("abcdef")))
    assert len(dataset) == 5 and dataset.classes == tuple("abcdef")
    image, label = dataset[2]
    assert torch.equal(image, images[2]) and label == 4
    batch, batch_labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch.dtype == torch.uint8 and torch.equal(batch, images[:4])
    assert torch.equal(batch_labels, labels[:4])


def test_unlabelled_items_have_label_minus_one():
    dataset = ImageDataset(ImageData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), None, "memory"))
    assert [dataset[i][1] for i in range(2)] == [-1, -1]


def test_rejects_other_types():
    with pytest.raises(TypeError, match="ImageDataset expects an ImageData, got Tensor"):
        ImageDataset(torch.zeros(2, 1, 2, 2))
