"""Flows built from the parts are normalised densities whose samples follow their log_prob."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn
from torch.distributions import Distribution as TorchDistribution
from torch.distributions import Independent, Normal
from torch.testing import assert_close

import flowkit
from flowkit import Flow
from flowkit.bijectors import (
    ActNorm,
    Affine,
    AffineCoupling,
    Compose,
    Exp,
    FactorOut,
    Inverse,
    LeakyReLU,
    Logit,
    Permute,
    Sigmoid,
    Softplus,
    Tanh,
    channel_mask,
)
from flowkit.distributions import ConditionalDiagonalNormal, DiagonalNormal, StandardNormal
from flowkit.nn import MLP
from tests.registry import glow_like, realnvp_vector

# Significance level of the goodness-of-fit tests; seeds are fixed, so a pass is reproducible.
ALPHA = 1e-3


def _randomize(module: nn.Module, scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)


# --- one-dimensional flows, each with its support -----------------------------------------------
def _real_line() -> Compose:
    return Compose(
        Affine(shift=0.3, scale=1.7),
        LeakyReLU(0.4),
        Sigmoid(),
        Logit(),
        Affine(shift=-0.5, scale=0.6),
        Tanh(),
        Inverse(Tanh()),
        Affine(shift=0.2, scale=1.3),
    )


def _unit_interval() -> Compose:
    return Compose(Logit(), Affine(shift=0.4, scale=0.7), LeakyReLU(2.5))


def _positive() -> Compose:
    return Compose(Inverse(Softplus()), Affine(shift=-0.3, scale=1.4))


def _open_interval() -> Compose:
    return Compose(Inverse(Tanh()), Affine(shift=0.1, scale=2.0), LeakyReLU(2.0))


def _log_normal() -> Compose:
    return Compose(Inverse(Exp()), Affine(shift=0.5, scale=2.0))


# Supports are the open intervals of the data. On the real line, sigmoid and tanh saturate in
# float64 (past |x| ~ 20 here), where the density is below 1e-16 but evaluates to NaN, so that flow
# is integrated over a finite range that holds all but a negligible part of its mass.
ONE_DIMENSIONAL = [
    pytest.param(_real_line, (-25.0, 15.0), id="real-line"),
    pytest.param(_unit_interval, (0.0, 1.0), id="unit-interval"),
    pytest.param(_positive, (0.0, np.inf), id="positive"),
    pytest.param(_open_interval, (-1.0, 1.0), id="open-interval"),
    pytest.param(_log_normal, (0.0, np.inf), id="log-normal"),
]


def _one_dimensional_flow(make, seed: int = 0) -> Flow:
    bijector = make()
    _randomize(bijector, 0.3, seed)
    return Flow(StandardNormal(()), bijector).double()


def _density(flow: Flow, x: float) -> float:
    with torch.no_grad():
        return math.exp(float(flow.log_prob(torch.tensor(x, dtype=torch.float64))))


@pytest.mark.parametrize(("make", "support"), ONE_DIMENSIONAL)
def test_one_dimensional_flow_integrates_to_one(make, support) -> None:
    flow = _one_dimensional_flow(make)
    total, error = integrate.quad(lambda x: _density(flow, x), *support, limit=200)
    assert abs(total - 1.0) < 1e-5 + error, total


@pytest.mark.parametrize(("make", "support"), ONE_DIMENSIONAL)
def test_one_dimensional_samples_follow_the_density(make, support) -> None:
    flow = _one_dimensional_flow(make)
    torch.manual_seed(1)
    with torch.no_grad():
        samples = flow.sample(2000).numpy()
    low, high = support
    assert bool(((samples > low) & (samples < high)).all())

    # The CDF: the mass below the smallest sample by quad, then the density integrated on a fine
    # grid across the samples.
    grid = np.linspace(samples.min(), samples.max(), 20001)
    with torch.no_grad():
        density = flow.log_prob(torch.from_numpy(grid)).exp().numpy()
    below = integrate.quad(lambda x: _density(flow, x), low, grid[0])[0]
    grid_cdf = below + integrate.cumulative_trapezoid(density, grid, initial=0.0)
    result = stats.kstest(samples, lambda v: np.interp(v, grid, grid_cdf))
    assert result.pvalue > ALPHA, result


# --- a two-dimensional flow -------------------------------------------------------------------
def _two_dimensional_flow() -> Flow:
    def coupling(flip: bool, scale_fn: str) -> AffineCoupling:
        net = MLP(1, 2, (16,), activation=nn.Tanh, zero_init=False)
        return AffineCoupling(net, channel_mask(2, event_rank=1, flip=flip), scale_fn=scale_fn)

    bijector = Compose(
        ActNorm(2, event_rank=1),
        coupling(False, "exp"),
        Permute.reverse(2),
        coupling(True, "sigmoid"),
        Affine((2,), event_rank=1),
    )
    torch.manual_seed(3)
    _randomize(bijector, 0.5, seed=4)
    flow = Flow(StandardNormal((2,)), bijector).double()
    data = torch.randn(256, 2, dtype=torch.float64) * torch.tensor([2.0, 0.5]) + 1.0
    return flowkit.initialize(flow, data)


def _grid_density(flow: Flow, limit: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-limit, limit, points)
    mesh = torch.from_numpy(np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1))
    with torch.no_grad():
        density = flow.log_prob(mesh).exp().numpy()
    return axis, density


def test_two_dimensional_flow_integrates_to_one() -> None:
    flow = _two_dimensional_flow()
    with torch.no_grad():
        samples = flow.sample(4000)
    limit = 2.0 * float(samples.abs().max())
    axis, density = _grid_density(flow, limit, 601)
    total = integrate.simpson(integrate.simpson(density, x=axis, axis=1), x=axis)
    assert abs(total - 1.0) < 2e-3, total
    # The density is not a product of its marginals: the coupling mixes the two coordinates.
    marginals = np.outer(
        integrate.simpson(density, x=axis, axis=1), integrate.simpson(density, x=axis, axis=0)
    )
    assert float(np.abs(marginals - density).max()) > 1e-2 * float(density.max())


@pytest.mark.parametrize("coordinate", [0, 1])
def test_two_dimensional_marginals_follow_the_density(coordinate: int) -> None:
    flow = _two_dimensional_flow()
    torch.manual_seed(5)
    with torch.no_grad():
        samples = flow.sample(3000).numpy()
    axis, density = _grid_density(flow, 2.0 * float(np.abs(samples).max()), 601)
    marginal = integrate.simpson(density, x=axis, axis=1 - coordinate)
    cdf = integrate.cumulative_trapezoid(marginal, axis, initial=0.0)
    result = stats.kstest(samples[:, coordinate], lambda v: np.interp(v, axis, cdf / cdf[-1]))
    assert result.pvalue > ALPHA, result


# --- sampling -----------------------------------------------------------------------------------
def _glow_flow(num_classes: int | None = None) -> Flow:
    torch.manual_seed(0)
    bijector = glow_like((1, 8, 8), num_classes=num_classes)
    _randomize(bijector, 0.02, seed=1)
    flow = Flow(StandardNormal((64,)), bijector, context_shape=() if num_classes else None)
    flow = flow.double()
    labels = torch.arange(8) % num_classes if num_classes else None
    return flowkit.initialize(flow, torch.rand(8, 1, 8, 8, dtype=torch.float64) - 0.5, labels)


def _conditional_vector_flow() -> Flow:
    torch.manual_seed(0)
    bijector = realnvp_vector((2,), context=True)
    base = ConditionalDiagonalNormal((2,), MLP(3, 4, (8,), zero_init=False), context_shape=(3,))
    flow = Flow(base, bijector)
    _randomize(flow, 0.3, seed=2)
    flow = flow.double()
    return flowkit.initialize(
        flow, torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    )


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sample_and_log_prob_agrees_with_log_prob(temperature: float) -> None:
    for flow, context in [
        (_one_dimensional_flow(_real_line), None),
        (_glow_flow(), None),
        (_glow_flow(num_classes=3), torch.tensor([0, 2, 1, 2])),
        (_conditional_vector_flow(), torch.randn(4, 3, dtype=torch.float64)),
    ]:
        with torch.no_grad():
            x, log_prob = flow.sample_and_log_prob(5, context, temperature=temperature)
            assert log_prob.shape == x.shape[: x.dim() - len(flow.event_shape)]
            # The log-density is the model's (at temperature 1), whatever the sampling temperature.
            assert_close(log_prob, flow.log_prob(x, context))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_temperature_scales_the_base_noise(temperature: float) -> None:
    flow = _glow_flow()
    torch.manual_seed(7)
    with torch.no_grad():
        z = flow.encode(flow.sample(500, temperature=temperature))
    assert z.shape == (500, 64)
    # 32,000 draws: the standard deviation is within 2 % of T, the mean within 4 standard errors.
    assert abs(float(z.std()) / temperature - 1.0) < 0.02
    assert abs(float(z.mean())) < 4 * temperature / math.sqrt(z.numel())


def test_temperature_scales_a_diagonal_normal_base() -> None:
    base = DiagonalNormal((3,))
    with torch.no_grad():
        base.mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        base.log_scale.copy_(torch.tensor([0.0, 1.0, -1.0]))
    torch.manual_seed(0)
    eps = (base.sample(20000, temperature=0.5) - base.mean) / base.log_scale.exp()
    assert_close(eps.std(0), torch.full((3,), 0.5), atol=0.02, rtol=0.0)


def test_flow_distribution_is_a_torch_distribution() -> None:
    flow = _conditional_vector_flow()
    context = torch.randn(4, 3, dtype=torch.float64)
    distribution = flow.distribution(context)
    assert isinstance(distribution, TorchDistribution)
    assert distribution.batch_shape == (4,) and distribution.event_shape == (2,)
    samples = distribution.sample((6,))
    assert samples.shape == (6, 4, 2) and not samples.requires_grad
    log_prob = distribution.log_prob(samples)
    assert log_prob.shape == (6, 4)
    for i in range(6):
        assert_close(log_prob[i], flow.log_prob(samples[i], context))
    # Reinterpreting the batch works as for any torch distribution.
    joint = Independent(distribution, 1)
    assert_close(joint.log_prob(samples), log_prob.sum(-1))

    draws = distribution.rsample((3,))
    assert draws.requires_grad
    draws.square().sum().backward()
    gradients = [p.grad for p in flow.parameters() if p.requires_grad]
    assert gradients and all(g is not None and bool(torch.isfinite(g).all()) for g in gradients)
    assert sum(float(g.abs().sum()) for g in gradients) > 0


def test_unconditional_flow_distribution() -> None:
    flow = _glow_flow()
    distribution = flow.distribution()
    assert distribution.batch_shape == () and distribution.event_shape == (1, 8, 8)
    samples = distribution.sample((2, 3))
    assert samples.shape == (2, 3, 1, 8, 8)
    assert_close(distribution.log_prob(samples), flow.log_prob(samples))
    assert bool(distribution.support.check(samples).all())


def test_flow_with_a_torch_distribution_as_base() -> None:
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    base = Independent(Normal(loc, scale), 1)
    bijector = realnvp_vector((2,)).double()
    _randomize(bijector, 0.3, seed=0)
    flow = Flow(base, bijector)
    x = torch.randn(7, 2, dtype=torch.float64)
    flowkit.initialize(flow, x)
    z, log_abs_det = flow.bijector(x)
    assert_close(flow.log_prob(x), base.log_prob(z) + log_abs_det)
    torch.manual_seed(0)
    with torch.no_grad():
        samples = flow.sample(4000)
        latents = flow.encode(samples)
    assert_close(latents.mean(0), loc, atol=0.1, rtol=0.0)
    assert_close(latents.std(0), scale, atol=0.1, rtol=0.0)
    with pytest.raises(ValueError, match="temperature 1, got 0.5"):
        flow.sample(3, temperature=0.5)


def test_conditional_flow_broadcasts_the_context_over_sample_dims() -> None:
    flow = _conditional_vector_flow()
    context = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    with torch.no_grad():
        log_prob = flow.log_prob(x, context)
        assert log_prob.shape == (5, 4)
        for i in range(5):
            for j in range(4):
                assert_close(log_prob[i, j], flow.log_prob(x[i, j], context[j]))
        samples = flow.sample(6, context)
        assert samples.shape == (6, 4, 2)
        one_context = flow.sample(None, context[:1])
        assert one_context.shape == (1, 2)


def test_conditional_diagonal_normal_log_prob_is_a_gaussian() -> None:
    conditioner = MLP(3, 4, (8,), zero_init=False).double()
    base = ConditionalDiagonalNormal((2,), conditioner, context_shape=(3,))
    context = torch.randn(6, 3, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)
    params = conditioner(context)
    expected = Independent(Normal(params[:, 0::2], params[:, 1::2].exp()), 1).log_prob(z)
    assert_close(base.log_prob(z, context), expected)


def test_conditional_samples_depend_on_their_own_context() -> None:
    flow = _conditional_vector_flow()
    first, second = torch.randn(2, 1, 3, dtype=torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        together = flow.sample(3, torch.cat([first, second]))
        torch.manual_seed(0)
        alone = flow.sample(3, torch.cat([first, first]))
    assert_close(together[:, 0], alone[:, 0])
    assert not torch.allclose(together[:, 1], alone[:, 1])


# --- latent structure ---------------------------------------------------------------------------
def test_unflatten_gives_the_levels_of_a_multi_scale_model() -> None:
    flow = _glow_flow()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) - 0.5
    with torch.no_grad():
        z = flow.encode(x)
        pieces = flow.unflatten(z)
    assert [tuple(p.shape[1:]) for p in pieces] == flow.latent_shapes() == [(2, 4, 4), (8, 2, 2)]
    assert_close(flow.flatten(pieces), z)
    assert_close(flow.unflatten(flow.flatten(pieces))[1], pieces[1])

    # The first piece is the first level's factored half, standardised under its split prior.
    levels = list(flow.bijector)
    factor_out = levels[-1]
    assert isinstance(factor_out, FactorOut)
    with torch.no_grad():
        h = Compose(*levels[:-1])(x)[0]
        kept, factored = h[:, :2], h[:, 2:]
        params = factor_out.prior(kept)
        expected = (factored - params[:, 0::2]) * torch.exp(-params[:, 1::2])
    assert_close(pieces[0], expected)


def test_encode_decode_round_trip() -> None:
    for flow, context, batch in [
        (_glow_flow(), None, (2, 3)),
        (_glow_flow(num_classes=3), torch.tensor([[0, 1, 2], [2, 2, 0]]), (2, 3)),
        (_conditional_vector_flow(), torch.randn(2, 3, 3, dtype=torch.float64), (2, 3)),
    ]:
        with torch.no_grad():
            # One sample per context row, or a (2, 3) batch of samples without context.
            x = flow.sample(batch) if context is None else flow.sample(None, context)
            z = flow.encode(x, context)
            assert z.shape == batch + tuple(flow.latent_shape)
            assert_close(flow.decode(z, context), x)
            z_drawn = torch.randn(batch + tuple(flow.latent_shape), dtype=torch.float64) * 0.5
            assert_close(flow.encode(flow.decode(z_drawn, context), context), z_drawn)
            # Extra batch dimensions are flattened for the convolutional networks and restored.
            assert_close(
                flow.log_prob(x, context).flatten(), flow.log_prob(x.flatten(0, 1), _flat(context))
            )


def _flat(context: torch.Tensor | None) -> torch.Tensor | None:
    return None if context is None else context.flatten(0, 1)
