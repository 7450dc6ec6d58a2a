"""Tests of ScaledTanh, alone and as the scale function of an affine coupling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from flowkit.bijectors import AffineCoupling, channel_mask
from flowkit.nn import MLP, ScaledTanh
from flowkit.testing import check_bijector
from flowkit.testing.strategies import batch_shapes, seeds, st


def test_scaled_tanh_values_and_bounds():
    scale = ScaledTanh(3, event_rank=3, init=0.5)
    with torch.no_grad():
        scale.scale.copy_(torch.tensor([0.5, -2.0, 1.0]).view(3, 1, 1))
    h = torch.randn(2, 3, 4, 4) * 10
    expected = torch.tensor([0.5, -2.0, 1.0]).view(3, 1, 1) * torch.tanh(h)
    torch.testing.assert_close(scale(h), expected)
    assert (scale(h).abs() <= torch.tensor([0.5, 2.0, 1.0]).view(3, 1, 1)).all()
    with pytest.raises(ValueError, match="ScaledTanh expects"):
        ScaledTanh(0)


@given(features=st.integers(2, 6), batch=batch_shapes(), seed=seeds())
def test_affine_coupling_with_scaled_tanh_passes_the_contract(features, batch, seed):
    mask = channel_mask(features, event_rank=1, flip=seed % 2 == 1)
    kept = int(mask.sum())
    coupling = AffineCoupling(
        MLP(kept, 2 * (features - kept), (8,)),
        mask,
        scale_fn=ScaledTanh(features - kept, event_rank=1),
    )
    assert any(p is coupling.transform.log_scale_fn.scale for p in coupling.parameters())
    check_bijector(coupling, (features,), batch_shape=batch, seed=seed, perturb=0.5)
