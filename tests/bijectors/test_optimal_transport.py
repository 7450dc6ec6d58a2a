"""ot_pairing: the exact minibatch optimal-transport plan between data rows and base draws."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from flowkit.bijectors import ot_pairing
from flowkit.testing.strategies import tensors


def _total_cost(x: Tensor, noise: Tensor) -> float:
    """The transport cost of pairing row i of ``x`` with row i of ``noise``."""
    return float((x - noise).pow(2).sum())


@st.composite
def _batches(draw: st.DrawFn) -> tuple[Tensor, Tensor]:
    rows, features = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    return draw(tensors((rows, features))), draw(tensors((rows, features)))


@given(_batches())
def test_pairing_permutes_the_noise_rows_at_the_least_total_cost(batch):
    x, noise = batch
    paired = ot_pairing(x, noise)
    # The same multiset of rows, only re-ordered.
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, noise.tolist()))
    cost = _total_cost(x, paired)
    tolerance = 1e-9 * (1.0 + _total_cost(x, noise))
    assert cost <= _total_cost(x, noise) + tolerance
    orders = itertools.permutations(range(len(x)))
    least = min(_total_cost(x, noise[list(order)]) for order in orders)
    assert cost == pytest.approx(least, abs=tolerance)


def test_pairing_keeps_the_noise_dtype_and_gradient_free_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator, requires_grad=True)
    noise = torch.randn(32, 3, generator=generator)
    paired = ot_pairing(x, noise)
    assert paired.dtype == torch.float32 and paired.device == noise.device
    assert not torch.equal(paired, noise)
    assert _total_cost(x.detach(), paired) < _total_cost(x.detach(), noise)
    # Pairing twice changes nothing: the plan of already optimal pairs is the identity.
    torch.testing.assert_close(ot_pairing(x, paired), paired, rtol=0, atol=0)


@pytest.mark.parametrize(
    "x, noise, fragment",
    [
        (torch.zeros(4, 2), torch.zeros(5, 2), r"one shape \(N, D\), got \(4, 2\) and \(5, 2\)"),
        (torch.zeros(2, 2, 2), torch.zeros(2, 2, 2), r"got \(2, 2, 2\)"),
        (torch.tensor([[0.0], [float("nan")]]), torch.zeros(2, 1), "finite"),
    ],
)
def test_bad_batches_are_named(x, noise, fragment):
    with pytest.raises(ValueError, match=fragment):
        ot_pairing(x, noise)


def test_without_scipy_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match=r"flowkit-torch\[cnf\].*scipy"):
        ot_pairing(torch.zeros(3, 2), torch.ones(3, 2))
