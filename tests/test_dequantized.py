"""Dequantized and VariationalDequantizer: a bound on discrete likelihoods, by brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from flowkit.bijectors import (
    Affine,
    AffineMap,
    Bijector,
    Compose,
    Coupling,
    LogisticMixtureCDF,
    checkerboard_mask,
)
from flowkit.data import reduce_bits, to_model_input
from flowkit.distributions import (
    AuxiliaryLoss,
    Dequantized,
    Flow,
    StandardNormal,
    VariationalDequantizer,
    uniform_noise,
)
from flowkit.train.objectives import BitsPerDim

EVENT = (1, 2, 2)
N_BITS = 2
BINS = 2**N_BITS
DIMS = math.prod(EVENT)


class ContextConv(nn.Module):
    """A coupling conditioner that sees the kept part and a context image of the same size."""

    def __init__(self, outputs: int, scale: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, outputs, 3, padding=1)
        with torch.no_grad():
            for parameter in self.conv.parameters():
                parameter.mul_(scale)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        assert context is not None
        return self.conv(torch.cat([x, context], dim=1))


def _coupling_flow(seed: int, dtype: torch.dtype = torch.float64) -> Flow:
    """Two random affine couplings over (1, 2, 2) after a scaling that fits the unit cube."""
    torch.manual_seed(seed)
    steps: list[Bijector] = [Affine(shape=EVENT, scale=5.0, event_rank=3)]
    for flip in (False, True):
        conv = nn.Conv2d(1, 2, 3, padding=1)
        steps.append(Coupling(conv, checkerboard_mask(2, 2, flip=flip), AffineMap("exp")))
    return Flow(StandardNormal(EVENT), Compose(steps)).to(dtype)


def _dequantizer(seed: int, dtype: torch.dtype = torch.float64) -> VariationalDequantizer:
    """Two conditional couplings of logistic-mixture maps, conditioned on the scaled image."""
    torch.manual_seed(seed)
    mixture = LogisticMixtureCDF(2)
    steps = [
        Coupling(
            ContextConv(mixture.params_per_element, 0.5),
            checkerboard_mask(2, 2, flip=flip),
            LogisticMixtureCDF(2),
        )
        for flip in (False, True)
    ]
    return VariationalDequantizer(Compose(steps)).to(dtype)


def _all_images() -> Tensor:
    """Every (1, 2, 2) image with 2-bit values: 4**4 = 256 of them, as int64."""
    values = list(itertools.product(range(BINS), repeat=DIMS))
    return torch.tensor(values, dtype=torch.int64).reshape((-1,) + EVENT)


def _models() -> dict[str, Dequantized]:
    return {
        "uniform": Dequantized(_coupling_flow(0), N_BITS),
        "variational": Dequantized(_coupling_flow(0), N_BITS, _dequantizer(1)),
    }


# --- agreement with the training pipeline ------------------------------------------------------
def bits_of_density(log_density: Tensor, num_dims: int, n_bits: int) -> Tensor:
    """Bits/dim of integer images from the flow's density on [-1/2, 1/2]: bins of width 2**-n."""
    return (-log_density + num_dims * n_bits * math.log(2.0)) / (num_dims * math.log(2.0))


@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_uniform_dequantization_matches_to_model_input_and_bits_per_dim(n_bits: int) -> None:
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    flow = Flow(
        StandardNormal((3, 4, 4)),
        Compose(
            [
                Affine(shape=(3, 4, 4), scale=3.0, event_rank=3),
                Coupling(nn.Conv2d(3, 6, 3, padding=1), checkerboard_mask(4, 4), AffineMap()),
            ]
        ),
    )
    model = Dequantized(flow, n_bits)
    reduced = reduce_bits(images, n_bits).long()
    reference = to_model_input(images, n_bits, generator=torch.Generator().manual_seed(3))
    noise = uniform_noise(images.shape, n_bits, generator=torch.Generator().manual_seed(3))
    y, log_q = model.dequantize(reduced, noise)
    assert torch.equal(y, reference)
    assert torch.equal(log_q, torch.zeros(6))
    # Drawing the noise itself with the same generator gives the same values.
    drawn, _ = model.dequantize(reduced, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, reference)
    # Bits per dimension equal the trainer's objective on to_model_input's output.
    with torch.no_grad():
        _, log_prob = model.latent_and_log_prob(reduced, noise=noise)
        expected = bits_of_density(flow.log_prob(reference), model.num_dims, n_bits)
        assert torch.equal(-log_prob / (model.num_dims * math.log(2.0)), expected)
        bits = model.bits_per_dim(reduced, generator=torch.Generator().manual_seed(3))
        assert torch.equal(bits, expected)
        # ... and the trainer's objective, which takes the integers and their noise.
        objective = BitsPerDim(model)(reduced, noise)["bpd"]
        assert torch.equal(objective, expected)


@pytest.mark.parametrize("n_bits", [1, 8, 12, 16])
def test_dequantized_values_stay_in_their_bin(n_bits: int) -> None:
    images = torch.randint(0, 2**n_bits, (64, 1, 2, 2), dtype=torch.int32)
    # The extremes of the noise grid, including its largest value just below one bin.
    images[:2] = torch.tensor([0, 2**n_bits - 1]).view(2, 1, 1, 1).to(torch.int32)
    noise = uniform_noise(images.shape, n_bits, generator=torch.Generator().manual_seed(0))
    noise[0] = 0.0
    noise[1] = 1 - 2.0 ** (n_bits - 24)
    model = Dequantized(_coupling_flow(0, torch.float32), n_bits)
    y, _ = model.dequantize(images, noise)
    assert y.dtype == torch.float32
    assert torch.equal(torch.floor((y + 0.5) * 2**n_bits).to(torch.int32), images)


def test_centered_noise_lies_in_the_open_interval() -> None:
    noise = uniform_noise((10000,), 8, generator=torch.Generator().manual_seed(0), centered=True)
    plain = uniform_noise((10000,), 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise - plain, torch.full_like(noise, 2.0**-17), rtol=0, atol=0)
    assert float(noise.min()) > 0 and float(noise.max()) < 1


# --- the bound ---------------------------------------------------------------------------------
def _log_weights(model: Dequantized, images: Tensor, draws: int, seed: int) -> Tensor:
    """One-draw log-weights, shape ``(draws, len(images))``."""
    repeated = images.expand((draws,) + images.shape)
    with torch.no_grad():
        return model.log_prob(repeated, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["uniform", "variational"])
def test_probabilities_of_all_images_sum_to_the_flows_mass_in_the_cube(name: str) -> None:
    model = _models()[name]
    # E_q[w] = P(x) for any q, so the sum over all images estimates the flow's mass inside
    # [-1/2, 1/2)^D, which is at most 1; it is estimated a second way by sampling the flow.
    weights = _log_weights(model, _all_images(), draws=256, seed=2).exp()
    total = weights.mean(0).sum()
    standard_error = (weights.var(0) / weights.shape[0]).sum().sqrt()
    with torch.no_grad():
        samples = model.flow.sample(40000)
    inside = ((samples >= -0.5) & (samples < 0.5)).flatten(1).all(-1).double()
    mass, mass_error = inside.mean(), inside.std() / math.sqrt(inside.numel())
    assert float(total) <= 1 + 4 * float(standard_error)
    tolerance = 4 * math.hypot(float(standard_error), float(mass_error))
    assert abs(float(total - mass)) <= tolerance, (float(total), float(mass), tolerance)
    # Without the bin volume 2**(-nD) the same sum would exceed 1: the check above can fail.
    assert float(total) * 2 ** (N_BITS * DIMS) > 1 + 4 * float(standard_error)


@pytest.mark.parametrize("name", ["uniform", "variational"])
def test_importance_weighted_bound_grows_with_the_number_of_samples(name: str) -> None:
    model = _models()[name]
    images = _all_images()[::8]
    repeats, counts = 64, (1, 4, 32)
    log_weights = _log_weights(model, images, draws=repeats * counts[-1], seed=5)
    means, errors = [], []
    for count in counts:
        grouped = log_weights[: repeats * count].reshape(repeats, count, -1)
        bounds = torch.logsumexp(grouped, dim=1) - math.log(count)
        means.append(bounds.mean(0))
        errors.append(bounds.std(0) / math.sqrt(repeats))
    for low, high in zip(range(len(counts)), range(1, len(counts))):
        difference = (means[high] - means[low]).mean()
        error = torch.hypot(errors[high], errors[low]).square().sum().sqrt() / len(images)
        assert float(difference) >= -3 * float(error)
    # Jensen's gap is strict for a non-degenerate q: K = 32 beats K = 1 by many standard errors.
    gain = (means[-1] - means[0]).mean()
    gain_error = torch.hypot(errors[-1], errors[0]).square().sum().sqrt() / len(images)
    assert float(gain) > 5 * float(gain_error)


def test_log_prob_with_samples_is_the_log_mean_of_the_weights() -> None:
    model = _models()["variational"]
    images = _all_images()[:5]
    with torch.no_grad():
        bound = model.log_prob(images, num_samples=7, generator=torch.Generator().manual_seed(1))
        generator = torch.Generator().manual_seed(1)
        single = torch.stack([model.log_prob(images, generator=generator) for _ in range(7)])
    torch.testing.assert_close(bound, single.exp().mean(0).log())


def test_variational_log_q_is_the_density_of_its_map() -> None:
    model = _models()["variational"]
    images = _all_images()[::37]
    scaled = images.double() / BINS - 0.5
    noise = uniform_noise(images.shape, N_BITS, generator=torch.Generator().manual_seed(4))
    noise = (noise + 0.5 * 2.0 ** (N_BITS - 24)).double()
    dequantizer = model.dequantizer
    assert dequantizer is not None
    u, log_q = dequantizer(noise, scaled)
    for index in range(len(images)):

        def noise_to_u(eps: Tensor, index: int = index) -> Tensor:
            return dequantizer(eps.reshape((1,) + EVENT), scaled[index : index + 1])[0].flatten()

        jacobian = torch.autograd.functional.jacobian(noise_to_u, noise[index].flatten())
        _, log_abs_det = torch.linalg.slogdet(jacobian)
        torch.testing.assert_close(log_q[index], -log_abs_det, rtol=1e-9, atol=1e-9)
    assert bool(((u > 0) & (u < 1)).all())
    # Through Dequantized: y = (x + u) / 2**n - 1/2 with that u, and the same log q.
    y, log_q_model = model.dequantize(images, noise)
    torch.testing.assert_close(y, (images.double() + u) / BINS - 0.5)
    torch.testing.assert_close(log_q_model, log_q)


# --- sampling, hooks and attributes ------------------------------------------------------------
def test_sample_is_the_floor_of_the_flows_sample() -> None:
    model = _models()["uniform"]
    torch.manual_seed(3)
    samples = model.sample((2, 3))
    torch.manual_seed(3)
    with torch.no_grad():
        continuous = model.flow.sample((2, 3))
    assert samples.shape == (2, 3) + EVENT and samples.dtype == torch.int64
    expected = torch.floor((continuous + 0.5) * BINS).clamp(0, BINS - 1).long()
    assert torch.equal(samples, expected)
    hot = model.sample(500, temperature=4.0)
    assert int(hot.min()) == 0 and int(hot.max()) == BINS - 1
    assert model.sample(0).shape == (0,) + EVENT


class _Hooked(Flow):
    def auxiliary_loss(self, z: Tensor, context: Tensor | None) -> AuxiliaryLoss | None:
        return AuxiliaryLoss(z.sum(), {"z": z.flatten(1).sum(-1)})

    def for_inference(self) -> Flow:
        return _Hooked(self.base, self.bijector)


def test_hooks_delegate_to_the_flow() -> None:
    dequantizer = _dequantizer(0)
    flow = _coupling_flow(0)
    plain = Dequantized(flow, N_BITS, dequantizer)
    assert plain.for_inference() is plain
    assert plain.auxiliary_loss(torch.zeros(2, *EVENT), None) is None
    hooked = Dequantized(_Hooked(flow.base, flow.bijector), N_BITS, dequantizer)
    inference = hooked.for_inference()
    assert isinstance(inference, Dequantized) and inference is not hooked
    assert inference.flow is not hooked.flow and inference.dequantizer is dequantizer
    z, _ = hooked.latent_and_log_prob(_all_images()[:3])
    extra = hooked.auxiliary_loss(z, None)
    assert extra is not None
    torch.testing.assert_close(extra.loss, z.sum())


def test_attributes_and_context_come_from_the_flow() -> None:
    flow = Flow(StandardNormal(EVENT), Affine(shape=EVENT, event_rank=3), num_classes=3)
    model = Dequantized(flow, N_BITS)
    assert model.event_shape == flow.event_shape
    assert model.context_shape == () and model.num_classes == 3
    labels = torch.tensor([0, 2])
    images = _all_images()[:2]
    log_prob = model.log_prob(images, labels, generator=torch.Generator().manual_seed(0))
    y, _ = model.dequantize(images, generator=torch.Generator().manual_seed(0))
    expected = flow.log_prob(y, labels) - DIMS * N_BITS * math.log(2.0)
    torch.testing.assert_close(log_prob, expected)
    with pytest.raises(ValueError, match="context"):
        model.log_prob(images)


@pytest.mark.parametrize("name", ["uniform", "variational"])
def test_batches_of_any_shape(name: str) -> None:
    model = _models()[name]
    images = _all_images()[:6].reshape((2, 3) + EVENT)
    assert model.log_prob(images, num_samples=2).shape == (2, 3)
    assert model.log_prob(images[:0]).shape == (0, 3)
    single = model.log_prob(images[0, 0], generator=torch.Generator().manual_seed(0))
    assert single.shape == ()


# --- errors at the boundary --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(2, *EVENT), TypeError, "integer dtype"),
        (torch.zeros(2, *EVENT, dtype=torch.bool), TypeError, "integer dtype"),
        (torch.full((2, *EVENT), BINS), ValueError, r"values in \[0, 4\).*from 4 to 4"),
        (torch.full((2, *EVENT), -1), ValueError, r"values in \[0, 4\).*from -1"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.long), ValueError, "event shape"),
        ([[0, 1], [2, 3]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(images: object, error: type, match: str) -> None:
    model = _models()["uniform"]
    with pytest.raises(error, match=match):
        model.log_prob(images)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "noise", "error", "match"),
    [
        ("uniform", torch.zeros(3, *EVENT), ValueError, "noise of the images' shape"),
        ("uniform", torch.ones(2, *EVENT), ValueError, r"values in \[0, 1\)"),
        ("uniform", torch.zeros(2, *EVENT, dtype=torch.long), TypeError, "floating-point"),
        ("variational", torch.zeros(2, *EVENT), ValueError, r"values in \(0, 1\)"),
    ],
)
def test_bad_noise_is_refused(name: str, noise: Tensor, error: type, match: str) -> None:
    model = _models()[name]
    with pytest.raises(error, match=match):
        model.latent_and_log_prob(_all_images()[:2], noise=noise)


@pytest.mark.parametrize(
    ("num_samples", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError)]
)
def test_bad_sample_counts_are_refused(num_samples: object, error: type) -> None:
    with pytest.raises(error, match="num_samples"):
        _models()["uniform"].log_prob(_all_images()[:2], num_samples=num_samples)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_bits", "error"), [(0, ValueError), (17, ValueError), (True, TypeError)]
)
def test_bad_construction_is_refused(n_bits: object, error: type) -> None:
    flow = _coupling_flow(0)
    with pytest.raises(error, match="n_bits"):
        Dequantized(flow, n_bits)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a Flow"):
        Dequantized(flow.bijector, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="VariationalDequantizer or None"):
        Dequantized(flow, 2, flow.bijector)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a Bijector"):
        VariationalDequantizer(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bits"):
        uniform_noise((2,), 17)
