"""The Trainer trains and evaluates every image model through Dequantized."""

import math

import torch
from torch import Tensor, nn

import flowkit
from flowkit.bijectors import Compose, Coupling, LogisticMixtureCDF, checkerboard_mask
from flowkit.data import to_model_input
from flowkit.distributions import Dequantized, VariationalDequantizer
from flowkit.presets.glow import build_glow
from flowkit.train import TrainConfig, Trainer
from flowkit.train.data import EVAL_NOISE_BLOCK, EVAL_SEED

from .conftest import make_trainer


class ContextConv(nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.conv = nn.Conv2d(2, outputs, 3, padding=1)

    def forward(self, x, context=None):
        return self.conv(torch.cat([x, context], dim=1))


def bits_of_density(log_density: Tensor, num_dims: int, n_bits: int) -> Tensor:
    """Bits/dim of integer images from the flow's density on [-1/2, 1/2]: bins of width 2**-n."""
    return (-log_density + num_dims * n_bits * math.log(2.0)) / (num_dims * math.log(2.0))


def _variational(tiny_model_config):
    torch.manual_seed(0)
    mixture = LogisticMixtureCDF(2)
    steps = [
        Coupling(
            ContextConv(mixture.params_per_element),
            checkerboard_mask(8, 8, flip=flip),
            LogisticMixtureCDF(2),
        )
        for flip in (False, True)
    ]
    return Dequantized(build_glow(tiny_model_config), 8, VariationalDequantizer(Compose(steps)))


def test_the_test_value_of_a_plain_flow_is_unchanged_by_dequantized(
    blobs, tiny_model_config, tmp_path
):
    # Evaluation now goes through Dequantized; for a plain flow it equals bits/dim of the flow on
    # to_model_input's output with the evaluation noise of each block, as before.
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path)
    flow = trainer.flow.eval()
    flowkit.initialize(flow, to_model_input(train.images[:32]))
    total = 0.0
    with torch.no_grad():
        for block, start in enumerate(range(0, len(test.images), EVAL_NOISE_BLOCK)):
            generator = torch.Generator().manual_seed(EVAL_SEED + block)
            x = to_model_input(test.images[start : start + EVAL_NOISE_BLOCK], generator=generator)
            total += float(bits_of_density(flow.log_prob(x), 64, 8).double().sum())
    # Equal up to float32 rounding: the bound is now formed in nats before the unit change.
    assert abs(trainer.evaluate(flow) - total / len(test.images)) < 1e-6


def test_importance_weighting_tightens_the_test_bound(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    trainer = make_trainer(tiny_model_config, train, test, tmp_path, max_steps=4)
    trainer.fit()
    flow = trainer.averaged_flow
    single = trainer.test_data.evaluate(flow, 32, trainer.process)
    weighted = trainer.test_data.evaluate(flow, 32, trainer.process, num_samples=8)
    assert weighted < single


def test_a_variational_dequantizer_trains_saves_and_loads(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    model = _variational(tiny_model_config)
    before = [p.detach().clone() for p in model.dequantizer.parameters()]
    config = TrainConfig(
        output=str(tmp_path),
        batch_size=16,
        test_batch_size=32,
        init_batch_size=32,
        max_steps=6,
        lr=5e-3,
        warmup_epochs=0.1,
        progress=False,
        num_samples=4,
        temperatures=(0.7,),
        device="cpu",
    )
    result = Trainer(model, config, train, test).fit()
    assert all(math.isfinite(value) for value in result.train_losses)
    after = list(model.dequantizer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    # Integer samples make a grid; the checkpoint loads into a fresh model of the same shape.
    assert list((tmp_path / "samples").glob("*.png"))
    loaded = flowkit.load(
        tmp_path / "checkpoint.pt", flow=_variational(tiny_model_config), weights="raw"
    )
    assert isinstance(loaded, Dequantized)
    levels = test.images[:8].long()
    noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    with torch.no_grad():
        expected = model.eval().latent_and_log_prob(levels, noise=noise)[1]
        got = loaded.latent_and_log_prob(levels, noise=noise)[1]
    assert bool(torch.isfinite(expected).all()) and torch.allclose(got, expected, atol=1e-5)
