"""CheckerboardFeatures: the two halves stacked along channels, its saved layout, its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowkit.bijectors import CheckerboardSplit
from flowkit.nn import CheckerboardFeatures


@pytest.mark.parametrize("alternate", [False, True], ids=["columns", "checkerboard"])
def test_the_network_sees_both_halves_stacked_along_channels(alternate: bool) -> None:
    split = CheckerboardSplit(4, 6, alternate=alternate)
    features = CheckerboardFeatures(split, nn.Identity())
    image = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    out = features(image)
    assert out.shape == (2, 6, 4, 3)
    if alternate:
        # Row i keeps column 2k + (i % 2) of each pair: the two colours of the board.
        rows = torch.arange(4).view(4, 1)
        columns = 2 * torch.arange(3).view(1, 3) + rows % 2
        kept = image[..., rows, columns]
        other = image[..., rows, columns + 1 - 2 * (rows % 2)]
    else:
        kept, other = image[..., 0::2], image[..., 1::2]
    assert torch.equal(out, torch.cat([kept, other], dim=1))


def test_the_split_and_the_network_are_saved_under_their_names() -> None:
    features = CheckerboardFeatures(CheckerboardSplit(2, 4), nn.Conv2d(2, 3, 1))
    assert list(features.state_dict()) == [
        "split.first_kept",
        "network.weight",
        "network.bias",
    ]


@pytest.mark.parametrize(
    "split, network, message",
    [
        (lambda x: (x, x), nn.Identity(), "split as an nn.Module with a split(x) method"),
        (nn.Identity(), nn.Identity(), "split as an nn.Module with a split(x) method"),
        (CheckerboardSplit(2, 4), lambda x: x, "network as an nn.Module, got function"),
    ],
    ids=["function-split", "module-without-split", "function-network"],
)
def test_bad_parts_are_refused_by_name(split, network, message: str) -> None:
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CheckerboardFeatures(split, network)
