import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit import Inverse
from flowkit.bijectors import InverseAutoregressive, MaskedAffineAutoregressive
from flowkit.bijectors.scale import SCALE_FUNCTIONS
from flowkit.nn import autoregressive_order
from flowkit.testing import check_bijector
from flowkit.testing.strategies import batch_shapes, scales, seeds
from tests.registry_autoregressive import ENTRIES


@st.composite
def affine_options(draw):
    features = draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["natural", "reversed", "permutation"]))
    order = list(draw(st.permutations(range(features)))) if kind == "permutation" else kind
    return dict(
        features=features,
        context_features=draw(st.sampled_from([None, 2])),
        hidden_features=(draw(st.integers(4, 10)),) * draw(st.integers(1, 2)),
        residual=draw(st.booleans()),
        order=order,
        scale_fn=draw(st.sampled_from(sorted(SCALE_FUNCTIONS))),
    )


def _context_shape(options):
    return None if options["context_features"] is None else (options["context_features"],)


@given(
    options=affine_options(), batch_shape=batch_shapes(), seed=seeds(), perturb=scales(0.05, 0.5)
)
def test_maf_honours_the_contract(options, batch_shape, seed, perturb):
    check_bijector(
        MaskedAffineAutoregressive(**options),
        (options["features"],),
        _context_shape(options),
        batch_shape=batch_shape,
        seed=seed,
        perturb=perturb,
        input_scale=2.0,
    )


@given(options=affine_options(), seed=seeds(), perturb=scales(0.05, 0.5))
def test_iaf_honours_the_contract(options, seed, perturb):
    check_bijector(
        InverseAutoregressive(**options),
        (options["features"],),
        _context_shape(options),
        seed=seed,
        perturb=perturb,
    )


def _randomise(module, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)
    return module


@given(options=affine_options(), seed=seeds())
def test_maf_inverse_equals_feature_by_feature_solution(options, seed):
    maf = _randomise(MaskedAffineAutoregressive(**options).double(), seed, 0.5)
    features = options["features"]
    z = torch.randn(6, features, dtype=torch.float64)
    context = None
    if options["context_features"] is not None:
        context = torch.randn(6, 2, dtype=torch.float64)
    # Brute force: solve x_i = (z_i - t_i) / s_i one feature at a time, in the autoregressive
    # order, each time evaluating the network on the features solved so far.
    positions = autoregressive_order(features, options["order"])
    x = torch.zeros_like(z)
    log_scales = torch.zeros_like(z)
    for feature in torch.argsort(positions).tolist():
        theta = maf.conditioner(x, context)
        shift, raw_scale = theta[:, 2 * feature], theta[:, 2 * feature + 1]
        log_scales[:, feature] = maf.transform.log_scale_fn(raw_scale)
        x[:, feature] = (z[:, feature] - shift) * torch.exp(-log_scales[:, feature])
    with torch.no_grad():
        x_recursion, log_abs_det = maf.inverse(z, context)
    torch.testing.assert_close(x_recursion, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(log_abs_det, -log_scales.sum(-1), rtol=1e-10, atol=1e-10)


def test_iaf_is_maf_run_backwards_with_shared_parameters():
    iaf = InverseAutoregressive(3, context_features=2, hidden_features=(8,)).double()
    iaf = _randomise(iaf, 0, 0.3)
    maf = iaf.bijector
    x, context = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        for (a, a_log), (b, b_log) in [
            (iaf(x, context), maf.inverse(x, context)),
            (iaf.inverse(x, context), maf(x, context)),
        ]:
            assert torch.equal(a, b) and torch.equal(a_log, b_log)
    assert isinstance(iaf, Inverse)
    shared = {"bijector." + name for name, _ in maf.named_parameters()}
    assert {name for name, _ in iaf.named_parameters()} == shared


@pytest.mark.parametrize("scale_fn", ["softplus", "exp"])
def test_maf_starts_as_the_identity(scale_fn):
    maf = MaskedAffineAutoregressive(4, context_features=3, hidden_features=(8,), scale_fn=scale_fn)
    x = torch.randn(7, 4)
    z, log_abs_det = maf(x, torch.randn(7, 3))
    # Exact up to one rounding of the scale (the softplus scale's floor shifts its argument).
    assert torch.allclose(z, x, rtol=1e-6, atol=0)
    assert torch.allclose(log_abs_det, torch.zeros(7), atol=1e-6)


def test_maf_errors_name_the_sizes():
    maf = MaskedAffineAutoregressive(3, context_features=2, hidden_features=(8,))
    with pytest.raises(ValueError, match=r"event shape \(3\), got event shape \(4\)"):
        maf(torch.randn(5, 4), torch.randn(5, 2))
    with pytest.raises(ValueError, match="context with 2 features, got None"):
        maf(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"event shape \(3\)"):
        maf.inverse_shape((5, 2))
    with pytest.raises(ValueError, match="scale_fn in"):
        MaskedAffineAutoregressive(3, scale_fn="tanh")
    with pytest.raises(TypeError, match="floating-point"):
        maf(torch.ones(5, 3, dtype=torch.long), torch.randn(5, 2))


AUTOREGRESSIVE_ENTRIES = [e for e in ENTRIES if e[0].startswith(("maf", "iaf"))]


@pytest.mark.parametrize(
    "name, make, event_shape, context_shape",
    AUTOREGRESSIVE_ENTRIES,
    ids=[e[0] for e in AUTOREGRESSIVE_ENTRIES],
)
def test_registry_entries_honour_the_contract(name, make, event_shape, context_shape):
    check_bijector(make(), event_shape, context_shape, seed=1)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_incremental_inverse_equals_one_pass_per_position(num_classes):
    from flowkit.bijectors import Autoregressive, SplineMap
    from flowkit.nn import CausalTransformer

    torch.manual_seed(0)
    net = CausalTransformer(2, 5, 11, channels=8, layers=2, heads=2, num_classes=num_classes)
    flow = Autoregressive(net, SplineMap(bins=4), (5, 2)).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    z = torch.randn(2, 3, 5, 2, dtype=torch.float64)  # two batch dimensions
    context = None if num_classes is None else torch.tensor([0, 2, -1])
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    x, log_abs_det = flow.inverse(z, context)
    assert not calls  # no full pass: one token per position through the key/value cache
    flow.incremental = False
    x_full, log_abs_det_full = flow.inverse(z, context)
    assert len(calls) == 5
    assert torch.allclose(x, x_full, rtol=0, atol=1e-12)
    assert torch.allclose(log_abs_det, log_abs_det_full, rtol=0, atol=1e-12)
    assert torch.allclose(flow(x, context)[0], z, atol=1e-10)
