"""Data-dependent initialisation: explicit, saved in the state dict, standardising every ActNorm."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

import flowkit
from flowkit import Flow
from flowkit.bijectors import ActNorm, Bijector, Compose
from flowkit.distributions import StandardNormal
from flowkit.initialization import DataDependentInit
from flowkit.nn import GlowConditioner
from tests.registry import glow_like, realnvp_vector


def _glow_flow() -> Flow:
    torch.manual_seed(0)
    return Flow(StandardNormal((64,)), glow_like((1, 8, 8))).double()


def _data(seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Far from standardised, and different per channel after the first squeeze.
    return torch.rand(16, 1, 8, 8, generator=generator, dtype=torch.float64) * 3.0 + 2.0


def _actnorm_outputs(flow: Flow, x: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
    """Run ``flow.log_prob`` and return the output of every ActNorm, by module name.

    Bijector ActNorms are captured with forward hooks. Inside Glow's coupling networks an ActNorm
    is folded into the weights of the convolution before it, so its output is that convolution's
    output (captured, before the in-place ReLU, by a hook on the convolution); any other use goes
    through ``normalize``, which is wrapped for the pass.
    """
    outputs: dict[str, Tensor] = {}
    handles = []
    originals = {}
    modules = dict(flow.named_modules())
    for name, module in modules.items():
        if isinstance(module, GlowConditioner):
            for conv, norm in (("conv_in", "norm_in"), ("conv_hidden", "norm_hidden")):
                handles.append(
                    getattr(module, conv).register_forward_hook(
                        lambda mod, args, out, key=f"{name}.{norm}": outputs.__setitem__(
                            key, out.clone()
                        )
                    )
                )
        if not isinstance(module, ActNorm):
            continue
        handles.append(
            module.register_forward_hook(
                lambda mod, args, out, name=name: outputs.__setitem__(name, out[0])
            )
        )
        originals[name] = module.normalize

        def recording(x: Tensor, name: str = name, original=module.normalize) -> Tensor:
            out = original(x)
            outputs.setdefault(name, out)
            return out

        module.normalize = recording
    try:
        with torch.no_grad():
            flow.log_prob(x, context)
    finally:
        for handle in handles:
            handle.remove()
        for name, module in flow.named_modules():
            if name in originals:
                del module.normalize
    return outputs


def _per_channel(value: Tensor, event_rank: int) -> tuple[Tensor, Tensor]:
    channel_dim = value.dim() - event_rank
    dims = [d for d in range(value.dim()) if d != channel_dim]
    mean = value.mean(dim=dims)
    return mean, (value - value.mean(dim=dims, keepdim=True)).square().mean(dim=dims).sqrt()


def _assert_standardised(
    flow: Flow, x: Tensor, context: Tensor | None = None, target: float = 1.0
) -> int:
    outputs = _actnorm_outputs(flow, x, context)
    modules = dict(flow.named_modules())
    for name, value in outputs.items():
        mean, std = _per_channel(value, modules[name].event_rank)
        assert float(mean.abs().max()) < 1e-6, (name, mean)
        assert float((std - target).abs().max()) < 1e-4, (name, std)
    return len(outputs)


def test_initialize_standardises_every_actnorm() -> None:
    flow, x = _glow_flow(), _data()
    before = _actnorm_outputs(flow.eval(), x)
    flow.train()
    assert float(_per_channel(before["bijector.bijectors.1"], 3)[0].abs().max()) > 1.0
    assert flowkit.initialize(flow, x) is flow
    # Two bijector ActNorms and two in each of the two coupling networks.
    assert _assert_standardised(flow, x) == 6


def test_initialize_with_context_and_a_target_scale() -> None:
    torch.manual_seed(0)
    bijector = realnvp_vector((4,), context=True)
    bijector[0].scale = 0.5
    flow = Flow(StandardNormal((4,)), bijector, context_shape=(3,)).double()
    x = torch.randn(64, 4, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1, 2.0]) + 3.0
    context = torch.randn(64, 3, dtype=torch.float64)
    flowkit.initialize(flow, x, context)
    outputs = _actnorm_outputs(flow, x, context)
    mean, std = _per_channel(outputs["bijector.bijectors.0"], 1)
    assert float(mean.abs().max()) < 1e-6
    assert float((std - 0.5).abs().max()) < 1e-4


def test_initialized_flag_is_in_the_state_dict() -> None:
    flow = _glow_flow()
    flags = {k: v for k, v in flow.state_dict().items() if k.endswith("initialized")}
    norms = [n for n, m in flow.named_modules() if isinstance(m, DataDependentInit)]
    assert sorted(flags) == sorted(f"{n}.initialized" for n in norms)
    assert not any(bool(v) for v in flags.values())
    flowkit.initialize(flow, _data())
    assert all(bool(v) for k, v in flow.state_dict().items() if k.endswith("initialized"))


def test_loaded_model_is_not_initialised_again() -> None:
    trained = flowkit.initialize(_glow_flow(), _data(seed=0))
    fresh = _glow_flow()
    fresh.load_state_dict(trained.state_dict())
    flowkit.initialize(fresh, _data(seed=1) * 4.0 - 7.0)
    for (name, loaded), (_, original) in zip(
        fresh.state_dict().items(), trained.state_dict().items()
    ):
        assert torch.equal(loaded, original), name


def test_force_initialises_again() -> None:
    flow = flowkit.initialize(_glow_flow(), _data(seed=0))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    other = _data(seed=1) * 4.0 - 7.0
    flowkit.initialize(flow, other, force=True)
    changed = [k for k, v in flow.state_dict().items() if not torch.equal(v, before[k])]
    assert "bijector.bijectors.1.bias" in changed and "bijector.bijectors.1.log_scale" in changed
    _assert_standardised(flow, other)


def test_no_initialisation_on_the_hot_path() -> None:
    norm = ActNorm(2, event_rank=1).eval()
    x = torch.randn(8, 2) * 3 + 1
    z, log_abs_det = norm(x)
    norm(x * 2)
    # Until initialised, ActNorm is the identity, and calling it sets nothing.
    assert torch.equal(z, x) and torch.equal(log_abs_det, torch.zeros(8))
    assert not bool(norm.initialized)
    assert torch.equal(norm.bias, torch.zeros(2)) and torch.equal(norm.log_scale, torch.zeros(2))


class _WithSpare(Bijector):
    """A bijector holding an ActNorm that its forward never calls."""

    event_rank = 1

    def __init__(self) -> None:
        super().__init__()
        self.used = ActNorm(2, event_rank=1)
        self.spare = ActNorm(2, event_rank=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.used(x)


def test_layer_without_data_raises() -> None:
    flow = Flow(StandardNormal((2,)), Compose(_WithSpare()))
    x = torch.randn(8, 2) * 3
    with pytest.raises(RuntimeError, match=r"no data.*bijector\.bijectors\.0\.spare") as caught:
        flowkit.initialize(flow, x)
    assert ".used" not in str(caught.value)
    # The pass is over: later calls initialise nothing.
    spare = flow.bijector[0].spare
    assert not spare._initializing and not bool(spare.initialized)
    with pytest.warns(UserWarning, match="never initialised"):
        flow.bijector[0].spare(x)
    assert not bool(spare.initialized) and torch.equal(spare.bias, torch.zeros(2))


def _initialize_on_rank(rank: int, init_file: str, result_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        # Each rank builds its own random model and holds its own data.
        torch.manual_seed(rank)
        flow = Flow(StandardNormal((64,)), glow_like((1, 8, 8)))
        flowkit.initialize(flow, _data(seed=10 + rank).float())
        with torch.no_grad():
            log_prob = flow.log_prob(_data(seed=99).float())
        torch.save({"state": flow.state_dict(), "log_prob": log_prob}, f"{result_dir}/{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_initialize_broadcasts_rank_zero(tmp_path) -> None:
    torch.multiprocessing.start_processes(
        _initialize_on_rank,
        args=(str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    first, second = (torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1))
    for name, value in first["state"].items():
        assert torch.equal(second["state"][name], value), name
    # Layers that cache weights derived from the parameters must see the broadcast ones.
    assert torch.equal(second["log_prob"], first["log_prob"])


def _caught_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught]


def test_training_an_uninitialised_model_warns_once() -> None:
    flow, x = _glow_flow(), _data()
    messages = _caught_warnings(lambda: flow.log_prob(x))
    # Each of the six ActNorms (two bijectors, four folded into coupling networks) warns once.
    assert len(messages) == 6, messages
    assert all("flowkit.initialize(flow, batch)" in m for m in messages)
    assert _caught_warnings(lambda: flow.log_prob(x)) == []
    # Evaluation and initialised models are silent.
    assert _caught_warnings(lambda: _glow_flow().eval().log_prob(x)) == []
    assert _caught_warnings(lambda: flowkit.initialize(_glow_flow(), x).log_prob(x)) == []


def test_the_initialised_state_survives_a_state_dict_round_trip() -> None:
    trained = flowkit.initialize(_glow_flow(), _data())
    fresh = _glow_flow()
    fresh.load_state_dict(trained.state_dict())
    assert _caught_warnings(lambda: fresh.log_prob(_data())) == []
    # Loading the state of an uninitialised model brings the warning back.
    fresh.load_state_dict(_glow_flow().state_dict())
    assert len(_caught_warnings(lambda: fresh.log_prob(_data()))) == 6


def test_a_constant_channel_fails_initialisation_with_its_index_and_spread() -> None:
    x = torch.randn(32, 4, dtype=torch.float64)
    x[:, 1] = 5.0
    x[:, 3] = 2.0 + 1e-9 * torch.randn(32, dtype=torch.float64)
    norm = ActNorm(4, event_rank=1).double()
    with pytest.raises(
        ValueError, match=r"channel\(s\) 1 \(std 0, needs > 1e-05\), 3 \(std [0-9.e-]+, needs"
    ) as caught:
        flowkit.initialize(norm, x)
    assert "(32, 4)" in str(caught.value)
    assert not bool(norm.initialized) and torch.equal(norm.log_scale, torch.zeros(4))
    # Constant float32 data far from zero varies by rounding only; it is constant too.
    far = torch.full((64, 2, 3, 3), 3.0e4) + torch.rand(64, 2, 3, 3) * 1e-3
    with pytest.raises(ValueError, match=r"channel\(s\) 0 \(std .*\), 1 \(std"):
        flowkit.initialize(ActNorm(2), far)
    # A small but real spread is accepted and standardised.
    small = torch.randn(64, 2, dtype=torch.float64) * 1e-3 + 7.0
    norm = flowkit.initialize(ActNorm(2, event_rank=1).double(), small)
    with torch.no_grad():
        z, _ = norm(small)
    # std / (std + INIT_STD_EPS) = 1 - 1e-3 at std = 1e-3.
    assert float((z.std(0, unbiased=False) - 1).abs().max()) < 2e-3
