import pytest
import torch

from flowkit.data import DataError, ImageData


def test_valid_data_is_made_contiguous():
    images = torch.zeros(2, 4, 4, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
    data = ImageData(images, torch.tensor([0, 1]), "memory", ["a", "b"])
    assert data.images.is_contiguous() and torch.equal(data.images, images)
    assert len(data) == 2 and data.image_shape == (3, 4, 4) and data.classes == ("a", "b")


@pytest.mark.parametrize(
    ("images", "labels", "classes", "message"),
    [
        (
            torch.zeros(2, 3, 4, 4),
            None,
            None,
            r"uint8 tensor of shape \(N, C, H, W\), got tensor of dtype torch.float32",
        ),
        (
            torch.zeros(3, 4, 4, dtype=torch.uint8),
            None,
            None,
            r"got tensor of dtype torch.uint8 and shape \(3, 4, 4\)",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.tensor([0, 1, 2]),
            None,
            r"as many labels as images \(2\), got 3",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.tensor([0, 1], dtype=torch.int32),
            None,
            r"int64 tensor .* got tensor of dtype torch.int32",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.tensor([0, -1]),
            None,
            "non-negative labels, got minimum -1",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.tensor([0, 2]),
            ("a", "b"),
            r"below the number of classes \(2\), got label 2",
        ),
    ],
)
def test_inconsistent_data_names_the_source(images, labels, classes, message):
    with pytest.raises(DataError, match=f"^my-source: .*{message}"):
        ImageData(images, labels, "my-source", classes)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_equality_is_identity_not_elementwise():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    first, second = ImageData(images, None, "a"), ImageData(images, None, "a")
    assert first == first and first != second  # no ambiguous tensor truth value
    assert len({first, second}) == 2


def test_split_images_is_seeded_disjoint_and_keeps_labels_with_images():
    from flowkit.data.base import split_images

    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    data = ImageData(images, torch.arange(20) % 3, "twenty", ("a", "b", "c"))
    train, test = split_images(data, 0.25, seed=5)
    assert (len(train), len(test)) == (15, 5)
    kept = sorted(train.images.flatten().tolist() + test.images.flatten().tolist())
    assert kept == list(range(20))
    for part in (train, test):
        assert torch.equal(part.labels, part.images.flatten().long() % 3)
        assert part.classes == data.classes
        # Both parts keep the stored order.
        assert part.images.flatten().tolist() == sorted(part.images.flatten().tolist())
    again = split_images(data, 0.25, seed=5)[1]
    other = split_images(data, 0.25, seed=6)[1]
    assert torch.equal(again.images, test.images)
    assert not torch.equal(other.images, test.images)
    assert "0.25 held out with seed 5" in test.source


@pytest.mark.parametrize(
    ("fraction", "error", "message"),
    [
        (0.01, DataError, "19 training and 0 test images"),
        (1.0, ValueError, "0 < test_fraction < 1"),
        ("0.1", TypeError, "test_fraction as a float"),
    ],
)
def test_split_images_refuses_empty_parts_and_bad_fractions(fraction, error, message):
    from flowkit.data.base import split_images

    data = ImageData(torch.zeros(19, 1, 1, 1, dtype=torch.uint8), None, "nineteen")
    with pytest.raises(error, match=message):
        split_images(data, fraction, seed=0)
