"""flowkit.load rebuilds every registered model from its checkpoint; flowkit.fit in one call."""

import math

import pytest
import torch

import flowkit
from flowkit import load
from flowkit.bijectors import Bijector
from flowkit.data import ImageData
from flowkit.distributions import Dequantized
from flowkit.presets.registry import MODELS, build_model, config_from_dict, get_model
from flowkit.presets.standardize import standardized
from flowkit.train import CheckpointError, TrainConfig, Trainer, load_checkpoint

# A tiny config for every registered model family; vector ones are conditional where they can be.
TINY = {
    "glow": {"K": 1, "L": 2, "input_shape": (1, 8, 8), "hidden_channels": 8, "seed": 0},
    "realnvp": {"input_shape": (1, 8, 8), "levels": 2, "hidden_channels": 4, "blocks": 1},
    "flowpp": {
        "input_shape": (1, 8, 8),
        "filters": 4,
        "components": 2,
        "blocks": 1,
        "heads": 2,
        "couplings": (1, 1, 1),
        "dequantizer_couplings": 1,
        "dequantizer_filters": 4,
        "dequantizer_blocks": 1,
        "feature_channels": 2,
        "feature_blocks": 1,
        "seed": 0,
    },
    "realnvp-tabular": {
        "features": 3,
        "context_features": 2,
        "transforms": 2,
        "hidden_features": (8,),
        "normalization": "act",
    },
    "maf": {"features": 3, "context_features": 2, "transforms": 2, "hidden_features": (8, 8)},
    "nsf": {"features": 3, "context_features": 2, "transforms": 2, "hidden_features": (8,)},
    "cnf": {
        "features": 3,
        "context_features": 2,
        "hidden_features": (8,),
        "method": "rk4",
        "step_size": 0.5,
        "kinetic_weight": 0.1,
        "seed": 0,
    },
    "ncsf": {
        "features": 3,
        "context_features": 2,
        "transforms": 2,
        "bins": 4,
        "hidden_features": (8,),
        "base": "von_mises",
    },
    "resflow": {"features": 3, "context_features": 2, "blocks": 2, "hidden_features": (8,)},
    "naf": {
        "features": 3,
        "context_features": 2,
        "transforms": 2,
        "transformer": "ddsf",
        "sigmoids": 4,
        "layers": 2,
        "hidden_features": (8,),
    },
    "umnn": {
        "features": 3,
        "context_features": 2,
        "transforms": 2,
        "signal": 3,
        "integrand_features": (8,),
        "nodes": 9,
        "hidden_features": (8,),
    },
    "tarflow": {
        "input_shape": (1, 8, 8),
        "patch_size": 4,
        "channels": 8,
        "blocks": 2,
        "layers_per_block": 1,
        "heads": 2,
        "seed": 0,
    },
}


def test_every_registered_model_has_a_tiny_config_here():
    assert set(TINY) == set(MODELS)


def _data(kind, generator):
    if kind == "image":
        images = torch.randint(0, 256, (48, 1, 8, 8), generator=generator, dtype=torch.uint8)
        return ImageData(images, None, "random"), ImageData(images[:16], None, "random")
    values = torch.randn(64, 3, generator=generator) * torch.tensor([1.0, 5.0, 0.1]) + 3.0
    context = torch.randn(64, 2, generator=generator)
    return (values, context), (values[:16], context[:16])


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("weights", ["averaged", "raw"])
def test_train_two_steps_then_load_gives_the_same_log_prob(name, weights, tmp_path):
    entry = get_model(name)
    config = config_from_dict(name, TINY[name])
    torch.manual_seed(0)
    flow = entry.build(config)
    generator = torch.Generator().manual_seed(0)
    train, test = _data(entry.kind, generator)
    data_info = {}
    if entry.kind == "vector":
        values, context = train
        statistics = {
            "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(),
            "context_mean": context.mean(0).tolist(),
            "context_std": context.std(0).tolist(),
        }
        flow = standardized(flow, **statistics)
        data_info = {"standardization": statistics}
    settings = TrainConfig(
        output=str(tmp_path),
        batch_size=16,
        init_batch_size=32,
        max_steps=2,
        epochs=1,
        progress=False,
        device="cpu",
        num_samples=4,
        temperatures=(0.5,),
        optimizer="adam",
        warmup_epochs=0.0,
    )
    trainer = Trainer(
        flow, settings, train, test, model_name=name, model_config=config, data_info=data_info
    )
    trainer.fit()
    loaded = load(tmp_path / "checkpoint.pt", weights=weights)
    reference = (trainer.averaged_flow if weights == "averaged" else trainer.flow).eval()
    x = torch.rand(5, 1, 8, 8) - 0.5 if entry.kind == "image" else test[0][:5]
    context = None if entry.kind == "image" else test[1][:5]
    assert isinstance(loaded, type(reference))
    with torch.no_grad():
        expected = _log_prob(reference, x, context)
        got = _log_prob(loaded, x, context)
    assert torch.isfinite(expected).all()
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    # The raw and averaged weights differ after two steps, so the choice is real.
    other = load(tmp_path / "checkpoint.pt", weights="raw" if weights == "averaged" else "averaged")
    with torch.no_grad():
        assert not torch.equal(_log_prob(other, x, context), got)


def _log_prob(model, x, context):
    """The log-density at ``x``; a model of integer images reads x's bins with x's offsets."""
    if not isinstance(model, Dequantized):
        return model.log_prob(x, context)
    scaled = (x + 0.5) * 2**model.n_bits
    levels = scaled.floor()
    noise = (scaled - levels).clamp(1e-3, 1 - 1e-3)
    return model.latent_and_log_prob(levels.long(), context, noise=noise)[1]


def test_a_checkpoint_of_a_custom_flow_loads_into_the_users_module(tmp_path):
    def make():
        torch.manual_seed(1)
        return flowkit.presets.nsf(2, transforms=1, hidden_features=(8,))

    flow = make()
    result = flowkit.fit(flow, torch.randn(128, 2) * 3 + 1, output=tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="custom flow.*flow=my_flow"):
        load(tmp_path / "checkpoint.pt")
    # fit standardised the rows inside the model; the loaded flow carries the same statistics
    # and, by default, the best validation weights, which fit leaves in the model.
    assert result.best is not None
    loaded = load(tmp_path / "checkpoint.pt", flow=make())
    x = torch.randn(4, 2) * 3 + 1
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x), result.flow.eval().log_prob(x))
        assert not torch.equal(loaded.log_prob(x), flow.eval().log_prob(x))
    with pytest.raises(CheckpointError, match="do not fit the model.*other shape"):
        load(tmp_path / "checkpoint.pt", flow=flowkit.presets.nsf(3, transforms=1))


def test_fit_lowers_the_test_nll_of_a_vector_flow():
    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(2048, generator=generator) * 2 * math.pi
    ring = torch.stack([angle.cos(), angle.sin()], -1) * 2 + 0.1 * torch.randn(
        2048, 2, generator=generator
    )
    torch.manual_seed(0)
    flow = flowkit.presets.nsf(2, transforms=3, hidden_features=(32, 32))
    result = flowkit.fit(flow, ring[:1536], ring[1536:], epochs=5)
    assert result.unit == "nats"
    first, last = result.test_nll[0][1], result.test_nll[-1][1]
    # Standard normal base at the start; a ring of radius 2 is far from it.
    assert last < first - 0.5
    with pytest.raises(AttributeError, match="test_nll"):
        result.test_bpd  # noqa: B018


def test_vector_runs_name_their_unit_and_draw_the_density(tmp_path):
    flow = flowkit.presets.maf(2, transforms=2, hidden_features=(8, 8))
    flowkit.fit(
        flow, torch.randn(256, 2), torch.randn(64, 2), output=tmp_path, epochs=2, log_every=1
    )
    records = flowkit.train.metrics.read_metrics(tmp_path / "metrics.jsonl")
    assert any("train_nll" in r for r in records) and any("test_nll" in r for r in records)
    assert not any("train_bpd" in r or "test_bpd" in r for r in records)
    assert (tmp_path / "nll.png").is_file() and (tmp_path / "density.png").is_file()
    assert not (tmp_path / "bpd.png").exists()


def test_a_checkpoint_describing_an_impossible_model_is_refused_before_building(tmp_path):
    flow = build_model("nsf", {"features": 2, "transforms": 1, "hidden_features": (4,)})
    flowkit.fit(flow, torch.randn(64, 2), output=tmp_path, epochs=1)
    path = tmp_path / "checkpoint.pt"
    state = load_checkpoint(path)
    state["model_name"] = "nsf"
    state["model_config"] = {"features": 2, "transforms": 0}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="transforms"):
        load(path)
    state["model_config"] = {"features": 2, "speed": 3}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="speed"):
        load(path)


def test_the_trainer_takes_a_dataset_or_dataloader_with_context(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    context = torch.randn(256, 1, generator=generator)
    values = torch.cat([3 * context, context**2], -1) + 0.1 * torch.randn(
        256, 2, generator=generator
    )
    dataset = TensorDataset(values, context)
    results = []
    for data in (dataset, DataLoader(dataset, batch_size=7), (values, context)):
        torch.manual_seed(0)
        flow = flowkit.presets.nsf(2, context_features=1, transforms=2, hidden_features=(16,))
        results.append(flowkit.fit(flow, data, (values[:64], context[:64]), epochs=3))
    # The same examples in the same order: the three forms train identically.
    assert results[0].train_losses == results[1].train_losses == results[2].train_losses
    assert results[0].test_nll[-1][1] < results[0].test_nll[0][1]


def test_float64_tables_train_in_the_flows_precision(tmp_path):
    import numpy as np

    values = np.random.default_rng(0).normal(size=(256, 2))  # float64, as read_table returns
    flow = flowkit.presets.nsf(2, transforms=1, hidden_features=(8,))
    result = flowkit.fit(flow, values, values[:64], epochs=1)
    assert all(math.isfinite(loss) for loss in result.train_losses)


class _LegacyContextScaling(Bijector):
    """The earlier layout's context standardisation: ``inner`` at ``(c - mean) / std``."""

    def __init__(self, inner, mean, std):
        super().__init__()
        self.inner = inner
        self.event_rank = inner.event_rank
        self.domain, self.codomain = inner.domain, inner.codomain
        self.register_buffer("context_mean", mean)
        self.register_buffer("context_std", std)

    def forward(self, x, context=None):
        return self.inner.forward(x, (context - self.context_mean) / self.context_std)

    def inverse(self, z, context=None):
        return self.inner.inverse(z, (context - self.context_mean) / self.context_std)

    @property
    def latent_rank(self):
        return self.inner.latent_rank

    def forward_shape(self, shape):
        return self.inner.forward_shape(shape)

    def inverse_shape(self, shape):
        return self.inner.inverse_shape(shape)


@pytest.mark.parametrize("context", [False, True], ids=["plain", "conditional"])
def test_a_table_checkpoint_of_the_earlier_affine_layout_still_loads(tmp_path, context):
    import dataclasses

    from flowkit.bijectors import Affine, Compose
    from flowkit.distributions import Flow
    from flowkit.presets.vector import NSFConfig, build_nsf

    config = NSFConfig(2, 1 if context else None, transforms=1, hidden_features=(8,), seed=0)
    inner = build_nsf(config)
    with torch.no_grad():
        for parameter in inner.parameters():
            parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(parameter.numel()))
    mean, std = torch.tensor([5.0, -1.0]), torch.tensor([2.0, 0.5])
    statistics = {"mean": mean.tolist(), "std": std.tolist(), "context_mean": [], "context_std": []}
    scaling = Affine(shape=(2,), learnable=False, event_rank=1)
    scaling.log_scale.copy_(-std.log())
    scaling.shift.copy_(-mean / std)
    bijector = Compose([scaling, inner.bijector])
    if context:
        statistics.update(context_mean=[3.0], context_std=[4.0])
        bijector = _LegacyContextScaling(bijector, torch.tensor([3.0]), torch.tensor([4.0]))
    old = Flow(inner.base, bijector, context_shape=inner.context_shape)
    state = {
        "format": 2,
        "model": old.state_dict(),
        "model_name": "nsf",
        "model_config": dataclasses.asdict(config),
        "data": {"kind": "vector", "standardization": statistics},
    }
    torch.save(state, tmp_path / "checkpoint.pt")
    loaded = load(tmp_path / "checkpoint.pt")
    x = torch.randn(6, 2) * std + mean
    c = torch.randn(6, 1) * 4 + 3 if context else None
    with torch.no_grad():
        assert torch.allclose(loaded.log_prob(x, c), old.log_prob(x, c), atol=1e-5)
