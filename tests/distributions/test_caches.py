"""Flow.clear_caches and Dequantized.clear_caches: cached derived weights are recomputed."""

from __future__ import annotations

import torch

from flowkit.bijectors import Compose, InvertibleConv1x1, Squeeze
from flowkit.distributions import Dequantized, Flow, StandardNormal, VariationalDequantizer


def _flow(seed: int) -> Flow:
    torch.manual_seed(seed)
    bijector = Compose([InvertibleConv1x1(2, lu=True), Squeeze(2), InvertibleConv1x1(8, lu=True)])
    return Flow(StandardNormal((8, 2, 2)), bijector)


def _write_through_data(conv: InvertibleConv1x1, seed: int) -> None:
    # As DistributedDataParallel's broadcast does: the parameters' version counters stay put.
    generator = torch.Generator().manual_seed(seed)
    for parameter in (conv.log_s, conv.upper):
        parameter.data.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def test_flow_clear_caches_recomputes_the_cached_weights() -> None:
    flow = _flow(0)
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = flow.log_prob(x)
        for index, step in enumerate(flow.bijector.bijectors):
            if isinstance(step, InvertibleConv1x1):
                _write_through_data(step, index)
        stale = flow.log_prob(x)
        flow.clear_caches()
        cleared = flow.log_prob(x)
        reference = _flow(0)
        reference.load_state_dict(flow.state_dict())
        expected = reference.log_prob(x)
    # The premise: the cache did not see the write, so the flow still computed the old function.
    torch.testing.assert_close(stale, before, rtol=0, atol=0)
    assert not torch.allclose(expected, before)
    torch.testing.assert_close(cleared, expected, rtol=0, atol=0)


def test_dequantized_clear_caches_reaches_the_flow_and_the_dequantizer() -> None:
    torch.manual_seed(0)
    flow_conv, dequantizer_conv = InvertibleConv1x1(2, lu=True), InvertibleConv1x1(2, lu=True)
    flow = Flow(StandardNormal((2, 2, 2)), flow_conv)
    model = Dequantized(flow, n_bits=3, dequantizer=VariationalDequantizer(dequantizer_conv))
    with torch.no_grad():
        before = [conv.weight_and_log_det()[1] for conv in (flow_conv, dequantizer_conv)]
        for seed, conv in enumerate((flow_conv, dequantizer_conv)):
            _write_through_data(conv, seed)
        model.clear_caches()
        after = [conv.weight_and_log_det()[1] for conv in (flow_conv, dequantizer_conv)]
    for conv, old, new in zip((flow_conv, dequantizer_conv), before, after):
        expected = conv._compute_log_det()
        assert not torch.allclose(expected, old)
        torch.testing.assert_close(new, expected)
