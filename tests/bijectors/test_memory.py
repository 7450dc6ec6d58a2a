"""Memory-saving Compose: the same gradients as plain autograd, whatever its parts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowkit
from flowkit.bijectors import Compose
from tests.registry import glow_like, realnvp_vector


def _gradients(make, memory_saving: bool, x, context=None) -> tuple[list, torch.Tensor]:
    torch.manual_seed(0)
    bijector = make(memory_saving).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in bijector.parameters():
            parameter.add_(
                0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            )
    flowkit.initialize(bijector, x, context)
    x = x.clone().requires_grad_(True)
    context = None if context is None else context.clone().requires_grad_(True)
    z, log_abs_det = bijector(x, context)
    (z.square().sum() * 0.5 - log_abs_det.sum()).backward()
    tensors = [x] + ([] if context is None else [context]) + list(bijector.parameters())
    return [t.grad for t in tensors], z.detach()


def _glow(memory_saving: bool) -> nn.Module:
    # Squeeze, Permute-free 1x1 convolutions, FactorOut and a learned top: the first part's
    # log-determinant (Squeeze) is a constant.
    return glow_like((1, 8, 8), memory_saving=memory_saving)


def _vector(memory_saving: bool) -> nn.Module:
    # Permute.reverse between the couplings has a constant log-determinant too.
    parts = list(realnvp_vector((4,), context=True))
    return Compose(*parts, memory_saving=memory_saving)


@pytest.mark.parametrize(
    ("make", "x", "context"),
    [
        (_glow, torch.rand(3, 1, 8, 8, dtype=torch.float64) - 0.5, None),
        (_vector, torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)),
    ],
    ids=["glow-like", "vector-with-context"],
)
def test_memory_saving_matches_plain_autograd(make, x, context) -> None:
    plain, z_plain = _gradients(make, False, x, context)
    saving, z_saving = _gradients(make, True, x, context)
    assert torch.equal(z_plain, z_saving)
    assert len(plain) == len(saving)
    for expected, got in zip(plain, saving):
        assert (expected is None) == (got is None)
        if expected is not None:
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
