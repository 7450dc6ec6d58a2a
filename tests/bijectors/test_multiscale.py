"""FactorOut and Standardize against their equations; latent_shapes of multi-scale models."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.testing import assert_close

from flowkit.bijectors import (
    ActNorm,
    Affine,
    Compose,
    FactorOut,
    Flatten,
    InvertibleConv1x1,
    Squeeze,
    Standardize,
    latent_shapes,
)
from flowkit.nn import GlowTopPrior, ZeroConv2d


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module


def test_factor_out_standardises_the_factored_part() -> None:
    prior = _randomize(ZeroConv2d(2, 4)).double()
    inner = InvertibleConv1x1(2, seed=0).double()
    factor_out = FactorOut((4, 3, 3), inner, prior)
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    z, log_abs_det = factor_out(x)
    h, factored = x[:, :2], x[:, 2:]
    params = prior(h)
    mean, log_scale = params[:, 0::2], params[:, 1::2]
    eps = (factored - mean) * torch.exp(-log_scale)
    inner_z, inner_log_abs_det = inner(h)
    assert z.shape == (5, 36)
    assert_close(z, torch.cat([eps.flatten(1), inner_z.flatten(1)], dim=1))
    assert_close(log_abs_det, inner_log_abs_det - log_scale.sum((1, 2, 3)))
    assert_close(factor_out.inverse(z)[0], x)


def test_factor_out_without_prior_passes_the_factored_part() -> None:
    factor_out = FactorOut((3, 2), Affine((1, 2), scale=2.0, event_rank=2), kept_channels=1)
    x = torch.randn(4, 3, 2)
    z, log_abs_det = factor_out(x)
    assert torch.equal(z[:, :4], x[:, 1:].flatten(1))
    assert_close(z[:, 4:], 2.0 * x[:, :1].flatten(1))
    assert_close(log_abs_det, torch.full((4,), 2 * float(torch.tensor(2.0).log())))


class _Shift(nn.Module):
    """A top prior with fixed mean and log-scale, interleaved as Glow's."""

    def __init__(self, mean: Tensor, log_scale: Tensor) -> None:
        super().__init__()
        self.params = torch.stack([mean, log_scale], dim=1).flatten(0, 1).unsqueeze(0)

    def forward(self) -> Tensor:
        return self.params


def test_standardize_equation() -> None:
    mean, log_scale = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    standardize = Standardize(_Shift(mean, log_scale), 3)
    x = torch.randn(4, 3, 2, 2)
    z, log_abs_det = standardize(x)
    assert_close(z, (x - mean) * torch.exp(-log_scale))
    assert_close(log_abs_det, -log_scale.sum().expand(4))
    assert_close(standardize.inverse(z)[0], x)


def test_class_conditional_standardize_uses_each_label() -> None:
    prior = _randomize(GlowTopPrior(2, (2, 2), num_classes=3))
    standardize = Standardize(prior, 2)
    x = torch.randn(4, 2, 2, 2)
    labels = torch.tensor([2, 0, 1, 2])
    z, log_abs_det = standardize(x, labels)
    for i, label in enumerate(labels.tolist()):
        z_i, log_abs_det_i = standardize(x[i : i + 1], torch.tensor([label]))
        assert_close(z[i : i + 1], z_i)
        assert_close(log_abs_det[i : i + 1], log_abs_det_i)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert_close(standardize(x, one_hot)[0], z)
    assert not torch.allclose(standardize(x, torch.tensor([0, 0, 0, 0]))[0], z)


def test_latent_shapes_of_a_three_level_model() -> None:
    third = Compose(Squeeze(), ActNorm(32))
    second = Compose(Squeeze(), ActNorm(16), FactorOut((16, 4, 4), third))
    model = Compose(Squeeze(), ActNorm(8), FactorOut((8, 8, 8), second))
    shapes = latent_shapes(model, (2, 16, 16))
    assert shapes == [(4, 8, 8), (8, 4, 4), (32, 2, 2)]
    assert sum(torch.Size(s).numel() for s in shapes) == 2 * 16 * 16
    x = torch.randn(3, 2, 16, 16)
    z, _ = model(x)
    # The last piece is the top level's output, flattened at the end of the latent; before
    # initialisation the ActNorms are the identity, so only the squeezes and splits act.
    squeeze = Squeeze()
    top = squeeze(squeeze(squeeze(x)[0][:, :4])[0][:, :8])[0]
    assert_close(z[:, -128:], top.flatten(1))
    assert latent_shapes(Compose(Squeeze(), Flatten((8, 2, 2))), (2, 4, 4)) == [(8, 2, 2)]
    assert latent_shapes(ActNorm(3), (3, 5, 5)) == [(3, 5, 5)]
