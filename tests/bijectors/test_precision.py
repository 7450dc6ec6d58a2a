"""Under torch.autocast every bijector keeps the flow in its input's dtype."""

from __future__ import annotations

import pytest
import torch

from flowkit.bijectors.precision import autocast_enabled, outside_autocast
from tests.registry import REGISTRY, example

# Their inverse decodes position by position through a key/value cache: the same function as the
# forward pass, but other matrix shapes, so in bfloat16 the two round differently (by about 1e-2).
# In float32 (how flowkit samples) the cache is exact; see tests/nn/test_transformer.py.
CACHED_DECODERS = {
    "autoregressive-causal-transformer-spline",
    "autoregressive-causal-transformer-class-conditional",
}


@pytest.mark.parametrize("case", REGISTRY, ids=[case.id for case in REGISTRY])
def test_forward_and_inverse_stay_float32_under_bfloat16_autocast(case):
    # The networks may compute in bfloat16; the outputs and log-determinants must come back in
    # float32, or latents and densities would be rounded to three significant digits.
    bijector, x, context = example(case, dtype=torch.float32)
    with torch.no_grad():
        z, forward_log_det = bijector(x, context)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z_half, log_det_half = bijector(x, context)
            x_back, inverse_log_det = bijector.inverse(z_half, context)
    for value in (z_half, log_det_half, x_back, inverse_log_det):
        assert value.dtype == torch.float32
    # Inverting under the same autocast evaluates the same networks on the same inputs.
    tolerance = 0.05 if case.id in CACHED_DECODERS else 1e-3
    assert torch.allclose(x_back, x, atol=tolerance, rtol=tolerance)
    scale = forward_log_det.abs().max().item() + 1.0
    assert torch.allclose(log_det_half, forward_log_det, atol=0.05 * scale, rtol=0)
    del z


def test_outside_autocast_turns_autocast_off_only_inside():
    weight = torch.randn(4, 4)

    class Linear(torch.nn.Module):
        @outside_autocast
        def forward(self, x, context=None):
            return x @ weight, autocast_enabled("cpu")

    x = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, enabled_inside = Linear()(x)
        assert autocast_enabled("cpu")
        assert (x @ weight).dtype == torch.bfloat16
    assert not enabled_inside
    assert y.dtype == torch.float32 and torch.equal(y, x @ weight)
