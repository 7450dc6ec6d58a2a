"""InvertibleConv1x1 (cached derived weights, float64 inverses, gradients) and Permute."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from flowkit.bijectors import InvertibleConv1x1, Permute

both = pytest.mark.parametrize("lu", [True, False], ids=["lu", "dense"])


def _perturbed(channels: int, *, lu: bool, scale: float, seed: int = 0) -> InvertibleConv1x1:
    conv = InvertibleConv1x1(channels, lu=lu, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return conv


def _count_calls(conv: InvertibleConv1x1) -> dict[str, int]:
    counts = {"weight": 0, "inverse": 0, "log_det": 0}
    for name in counts:
        original = getattr(conv, f"_compute_{name}")

        def counted(name: str = name, original=original) -> Tensor:
            counts[name] += 1
            return original()

        setattr(conv, f"_compute_{name}", counted)
    return counts


@both
def test_cache_is_reused_without_autograd(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1)
    counts = _count_calls(conv)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        weight, log_det = conv.weight_and_log_det()
        again, log_det_again = conv.weight_and_log_det()
        z, _ = conv(x)
        conv(x)
        conv.inverse(z)
        conv.inverse(z)
    assert again is weight and log_det_again is log_det
    assert counts == {"weight": 1, "inverse": 1, "log_det": 1}


@both
def test_autograd_builds_fresh_weights(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1)
    counts = _count_calls(conv)
    x = torch.randn(2, 4, 3, 3)
    conv(x)
    conv(x)
    assert counts["weight"] == 2 and counts["log_det"] == 2


@both
def test_no_grad_results_equal_grad_results(lu: bool) -> None:
    conv = _perturbed(5, lu=lu, scale=0.2)
    x = torch.randn(3, 5, 4, 2)
    z, log_abs_det = conv(x)
    back, inverse_log_abs_det = conv.inverse(z)
    with torch.no_grad():
        z_cached, log_abs_det_cached = conv(x)
        back_cached, inverse_log_abs_det_cached = conv.inverse(z_cached)
    assert_close(z_cached, z.detach(), rtol=0, atol=0)
    assert_close(log_abs_det_cached, log_abs_det.detach(), rtol=0, atol=0)
    assert_close(back_cached, back.detach(), rtol=0, atol=0)
    assert_close(inverse_log_abs_det_cached, inverse_log_abs_det.detach(), rtol=0, atol=0)


def _cached_weight(conv: InvertibleConv1x1) -> Tensor:
    with torch.no_grad():
        return conv.weight_and_log_det()[0]


def _snapshot(conv: InvertibleConv1x1) -> tuple[Tensor, Tensor]:
    # The dense weight is the parameter itself (a view): copy it to compare before and after.
    with torch.no_grad():
        return _cached_weight(conv).clone(), conv._derived("inverse")


def _fresh_weight(conv: InvertibleConv1x1) -> Tensor:
    return conv._compute_weight().detach()


@both
def test_cache_is_invalidated_by_an_optimizer_step(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1)
    before, inverse_before = _snapshot(conv)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    z, log_abs_det = conv(torch.randn(2, 4, 3, 3))
    (z.square().sum() - log_abs_det.sum()).backward()
    optimizer.step()
    after, inverse_after = _snapshot(conv)
    assert not torch.equal(after, before) and inverse_after is not inverse_before
    assert_close(after, _fresh_weight(conv), rtol=0, atol=0)
    with torch.no_grad():
        # A float32 inverse is exact to float32 rounding times the weight's condition number.
        slack = 4 * 4 * torch.finfo(torch.float32).eps * float(torch.linalg.cond(after.double()))
        product = inverse_after.double() @ after.double()
        assert_close(product, torch.eye(4, dtype=torch.float64), atol=slack, rtol=0)
        assert_close(conv.weight_and_log_det()[1], torch.linalg.slogdet(after.double())[1].float())


@both
def test_cache_is_invalidated_by_load_state_dict(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1, seed=0)
    other = _perturbed(4, lu=lu, scale=0.1, seed=5)
    before, inverse_before = _snapshot(conv)
    conv.load_state_dict(other.state_dict())
    after, inverse_after = _snapshot(conv)
    assert not torch.equal(after, before) and inverse_after is not inverse_before
    assert_close(after, _cached_weight(other), rtol=0, atol=0)
    assert_close(inverse_after, _snapshot(other)[1], rtol=0, atol=0)


@both
def test_cache_is_invalidated_by_a_dtype_change(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1)
    before, inverse_before = _snapshot(conv)
    conv.double()
    after, inverse_after = _snapshot(conv)
    assert inverse_before.dtype == torch.float32 and inverse_after.dtype == torch.float64
    assert before.dtype == torch.float32 and after.dtype == torch.float64
    assert_close(after.float(), before)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        z, log_abs_det = conv(x)
        assert z.dtype == log_abs_det.dtype == torch.float64
        assert_close(conv.inverse(z)[0], x)


@both
def test_cache_is_invalidated_by_an_in_place_update(lu: bool) -> None:
    conv = _perturbed(4, lu=lu, scale=0.1)
    before, inverse_before = _snapshot(conv)
    with torch.no_grad():
        next(conv.parameters()).mul_(1.5)
    after, inverse_after = _snapshot(conv)
    assert not torch.equal(after, before) and not torch.equal(inverse_after, inverse_before)


def test_float64_inverse_is_accurate_for_64_channels() -> None:
    eye = torch.eye(64, dtype=torch.float64)
    # Fresh (a rotation) and trained-looking weights; products are taken in float64 so that
    # only the error of the stored float32 matrices counts.
    for lu, scale in [(True, 0.0), (False, 0.0), (False, 0.3)]:
        conv = _perturbed(64, lu=lu, scale=scale)
        with torch.no_grad():
            weight, inverse = conv.weight_and_log_det()[0], conv._derived("inverse")
        assert weight.dtype == inverse.dtype == torch.float32
        error = float((weight.double() @ inverse.double() - eye).abs().max())
        assert error < 1e-6, (lu, scale, error)
    # With LU factors the inverse is that of the exact product: compare with it in float64.
    conv = _perturbed(64, lu=True, scale=0.1)
    with torch.no_grad():
        inverse = conv._derived("inverse").double()
        exact = torch.linalg.inv(conv.double()._compute_weight())
    assert float((inverse - exact).abs().max() / exact.abs().max()) < 1e-6


@both
def test_log_det_matches_slogdet_in_float64(lu: bool) -> None:
    conv = _perturbed(16, lu=lu, scale=0.2)
    with torch.no_grad():
        weight, log_det = conv.weight_and_log_det()
    assert_close(log_det.double(), torch.linalg.slogdet(weight.double())[1], atol=1e-5, rtol=1e-6)


def test_gradients_reach_the_lu_parameters() -> None:
    conv = _perturbed(4, lu=True, scale=0.1)
    conv.train()
    x = torch.randn(2, 4, 3, 5)
    z, log_abs_det = conv(x)
    (z.square().sum() - log_abs_det.sum()).backward()
    for name in ("lower", "upper", "log_s"):
        gradient = getattr(conv, name).grad
        assert gradient is not None and float(gradient.abs().max()) > 0, name
    # Only the free entries of the triangular factors move.
    assert float(torch.triu(conv.lower.grad).abs().max()) == 0
    assert float(torch.tril(conv.upper.grad).abs().max()) == 0
    # d log|det J| / d log_s = H * W for each diagonal entry.
    conv.zero_grad()
    conv(x)[1].sum().backward()
    assert_close(conv.log_s.grad, torch.full((4,), 2 * 3 * 5.0))


def test_dense_log_det_gradient_is_the_inverse_transpose() -> None:
    conv = _perturbed(4, lu=False, scale=0.2).double()
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    conv(x)[1].sum().backward()
    assert_close(conv.weight.grad, 6 * torch.linalg.inv(conv.weight.detach()).T)


@both
def test_starts_from_a_seeded_rotation(lu: bool) -> None:
    weight = _cached_weight(InvertibleConv1x1(6, lu=lu, seed=3))
    assert_close(weight @ weight.T, torch.eye(6), atol=1e-6, rtol=0)
    assert torch.equal(weight, _cached_weight(InvertibleConv1x1(6, lu=lu, seed=3)))
    assert not torch.equal(weight, _cached_weight(InvertibleConv1x1(6, lu=lu, seed=4)))


def test_conv_is_a_matrix_at_every_pixel() -> None:
    conv = _perturbed(3, lu=True, scale=0.2)
    x = torch.randn(2, 5, 3, 4, 2)
    with torch.no_grad():
        weight = conv.weight_and_log_det()[0]
        z, _ = conv(x)
    expected = torch.einsum("ij,...jhw->...ihw", weight, x)
    assert_close(z, expected, atol=1e-6, rtol=1e-5)


# --- Permute --------------------------------------------------------------------------------------
def test_permute_moves_entries() -> None:
    permute = Permute([2, 0, 3, 1])
    x = torch.tensor([[10.0, 11.0, 12.0, 13.0]])
    z, log_abs_det = permute(x)
    assert z.tolist() == [[12.0, 10.0, 13.0, 11.0]]
    assert log_abs_det.tolist() == [0.0]
    assert torch.equal(permute.inverse(z)[0], x)


def test_permute_images_moves_channels() -> None:
    permute = Permute.reverse(3, event_rank=3)
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(permute(x)[0], x.flip(1))


def test_permute_shuffle_is_seeded_and_saved() -> None:
    first, again, other = (
        Permute.shuffle(8, seed=1),
        Permute.shuffle(8, seed=1),
        Permute.shuffle(8, seed=2),
    )
    assert torch.equal(first.permutation, again.permutation)
    assert not torch.equal(first.permutation, other.permutation)
    assert sorted(first.permutation.tolist()) == list(range(8))
    restored = Permute.shuffle(8, seed=2)
    restored.load_state_dict(first.state_dict())
    x = torch.randn(3, 8)
    assert torch.equal(restored(x)[0], first(x)[0])
    assert torch.equal(restored.inverse(first(x)[0])[0], x)


@pytest.mark.parametrize("channels", [2, 5, 8])
def test_lu_initialisation_factors_the_random_rotation_as_p_l_u(channels: int) -> None:
    # The rotation drawn from the seed, as the constructor draws it.
    generator = torch.Generator().manual_seed(7)
    gaussian = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    rotation = torch.linalg.qr(gaussian)[0]
    p, lower, upper = torch.linalg.lu(rotation)
    # W = P L U (not P^T L U): with a non-symmetric permutation the other convention fails.
    torch.testing.assert_close(p @ lower @ upper, rotation, rtol=0, atol=1e-14)
    conv = InvertibleConv1x1(channels, seed=7)
    assert torch.equal(conv.permutation, p.float())
    assert torch.equal(conv.sign_s, torch.sign(torch.diagonal(upper)).float())
    assert torch.equal(conv.lower, torch.tril(lower, -1).float())
    assert torch.equal(conv.upper, torch.triu(upper, 1).float())
    assert torch.equal(conv.log_s, torch.diagonal(upper).abs().log().float())
    # In float64 the weight built from the stored factors is P L U of those factors exactly, and
    # the rotation up to the float32 rounding of the stored factors.
    conv = conv.double()
    eye = torch.eye(channels, dtype=torch.float64)
    stored_upper = conv.upper + torch.diag(conv.sign_s * conv.log_s.exp())
    expected = conv.permutation @ (conv.lower + eye) @ stored_upper
    assert torch.equal(conv.weight_and_log_det()[0], expected)
    torch.testing.assert_close(conv.weight_and_log_det()[0], rotation, rtol=0, atol=1e-6)
