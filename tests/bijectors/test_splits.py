"""CheckerboardSplit: the kept pixels are the checkerboard's, gathered to half width."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.bijectors import AffineMap, CheckerboardSplit, Coupling, checkerboard_mask
from flowkit.nn import ConvAttn
from flowkit.testing import check_bijector


@settings(max_examples=20, deadline=None)
@given(
    height=st.integers(1, 5),
    half_width=st.integers(1, 3),
    channels=st.integers(1, 3),
    flip=st.booleans(),
)
def test_split_gathers_the_checkerboard(
    height: int, half_width: int, channels: int, flip: bool
) -> None:
    width = 2 * half_width
    split = CheckerboardSplit(height, width, flip=flip)
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(height))
    x_a, x_b = split.split(x)
    assert x_a.shape == x_b.shape == (2, channels, height, half_width)
    mask = checkerboard_mask(height, width, flip=flip).expand(channels, -1, -1)
    # Row by row, in column order: exactly the pixels the mask keeps, and the others.
    assert torch.equal(x_a.flatten(), x[:, mask].flatten())
    assert torch.equal(x_b.flatten(), x[:, ~mask].flatten())
    assert torch.equal(split.merge(x_a, x_b), x)


def test_flip_swaps_the_halves() -> None:
    x = torch.randn(3, 2, 4, 6)
    x_a, x_b = CheckerboardSplit(4, 6).split(x)
    y_a, y_b = CheckerboardSplit(4, 6, flip=True).split(x)
    assert torch.equal(x_a, y_b) and torch.equal(x_b, y_a)


def test_coupling_with_checkerboard_split_honours_the_contract() -> None:
    torch.manual_seed(0)
    network = ConvAttn(2, 2 * 2, filters=4, blocks=1, heads=2, spatial_shape=(4, 3))
    coupling = Coupling(network, CheckerboardSplit(4, 6, flip=True), AffineMap("exp"))
    check_bijector(coupling, (2, 4, 6))


def test_coupling_changes_only_the_transformed_colour() -> None:
    torch.manual_seed(0)
    network = ConvAttn(1, 2, filters=4, blocks=1, heads=2)
    torch.nn.init.normal_(network.output.weight)
    coupling = Coupling(network, CheckerboardSplit(4, 4), AffineMap("exp"))
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        z, _ = coupling(x)
    mask = checkerboard_mask(4, 4)
    assert torch.equal(z[:, :, mask[0]], x[:, :, mask[0]])
    assert not torch.allclose(z[:, :, ~mask[0]], x[:, :, ~mask[0]])


@pytest.mark.parametrize(
    ("height", "width", "message"),
    [(4, 5, "even width, got 5"), (0, 4, "height as a positive int"), (2, 2.0, "width as")],
)
def test_bad_sizes(height: object, width: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckerboardSplit(height, width)  # type: ignore[arg-type]


def test_coupling_rejects_another_board_size() -> None:
    coupling = Coupling(ConvAttn(1, 2, filters=4, blocks=0), CheckerboardSplit(4, 4), AffineMap())
    with pytest.raises(ValueError, match=r"event shape \(\*, 4, 4\)"):
        coupling(torch.randn(2, 1, 4, 6))


@pytest.mark.parametrize("flip", [False, True])
def test_without_alternation_the_split_is_the_official_even_and_odd_columns(flip: bool) -> None:
    x = torch.randn(2, 3, 4, 6)
    split = CheckerboardSplit(4, 6, flip=flip, alternate=False)
    x_a, x_b = split.split(x)
    # Flow++'s official CheckerboardSplit: reshape [.., W / 2, 2, C] and unstack the pair.
    even, odd = x[..., 0::2], x[..., 1::2]
    assert torch.equal(x_a, odd if flip else even)
    assert torch.equal(x_b, even if flip else odd)
    assert torch.equal(split.merge(x_a, x_b), x)
