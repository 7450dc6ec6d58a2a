"""check_bijector must catch broken bijectors, name the failed property, and pass correct ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from torch import Tensor, nn
from torch.distributions import constraints

from flowkit.bijectors import Bijector
from flowkit.bijectors.interop import BijectorTransform
from flowkit.testing import check_bijector
from flowkit.testing.strategies import seeds

FEATURES = 3


class Linear(Bijector):
    """A correct dense linear map on vectors: z = x W^T + b, log|det| = log|det W|."""

    event_rank = 1

    def __init__(self, features: int = FEATURES) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(
            torch.eye(features) + 0.3 * torch.randn(features, features, generator=generator)
        )
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, features))

    def log_det(self, x: Tensor) -> Tensor:
        return torch.linalg.slogdet(self.weight)[1].expand(x.shape[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x @ self.weight.T + self.bias, self.log_det(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = torch.linalg.solve(self.weight, (z - self.bias).unsqueeze(-1)).squeeze(-1)
        return x, -self.log_det(z)


class Tanh(Bijector):
    """A correct elementwise map onto (-1, 1), with its codomain declared."""

    codomain = constraints.interval(-1.0, 1.0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = torch.tanh(x)
        return z, torch.log1p(-z * z)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.atanh(z), -torch.log1p(-z * z)


class ContextShift(Bijector):
    """A correct conditional map: z = x + context @ M."""

    event_rank = 1

    def __init__(self, context_features: int = 2) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.ones(context_features, FEATURES))

    def shift(self, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError("ContextShift expects a context, got None")
        return context @ self.mix

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + self.shift(context), x.new_zeros(x.shape[:-1])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z - self.shift(context), z.new_zeros(z.shape[:-1])


# --- broken variants, each wrong in one way only -----------------------------------------------
class LogDetOffByConstant(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        return super().log_det(x) + 0.5


class LogDetWrongSign(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        return -super().log_det(x)


class LogDetWrongForOneElement(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        log_det = super().log_det(x).clone()
        log_det.view(-1)[-1] += 0.25
        return log_det


class NotTheInverse(Linear):
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # Forgets the bias.
        x = torch.linalg.solve(self.weight, z.unsqueeze(-1)).squeeze(-1)
        return x, -self.log_det(z)


class WrongForwardShape(Linear):
    def forward_shape(self, shape):
        return torch.Size(tuple(shape[:-1]) + (shape[-1] + 1,))


class WrongInverseShape(Linear):
    def inverse_shape(self, shape):
        return torch.Size(tuple(shape[:-1]) + (1, shape[-1]))


class LogDetSummedOverBatch(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        return super().log_det(x).sum()


class LogDetNotSummedOverEvent(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        return (super().log_det(x) / x.shape[-1]).unsqueeze(-1).expand(x.shape)


class MixesBatch(Linear):
    """z = x + c * mean over the batch: invertible on the whole batch, but not per element."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + 0.5 * x.mean(dim=0, keepdim=True), x.new_zeros(x.shape[:-1])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z - 0.5 * z.mean(dim=0, keepdim=True) / 1.5, z.new_zeros(z.shape[:-1])


class NonFiniteOutput(Linear):
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, log_det = super().forward(x)
        return z / (x - x), log_det


class NonFiniteLogDet(Linear):
    def log_det(self, x: Tensor) -> Tensor:
        return super().log_det(x) + torch.log(x.sum(-1) * 0.0)


class InverseLogDetNotMinusForward(Linear):
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, log_det = super().inverse(z)
        return x, -log_det


class ChangesDtype(Linear):
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, log_det = super().forward(x)
        return z.float(), log_det


class IgnoresMissingContext(ContextShift):
    def shift(self, context: Tensor | None) -> Tensor:
        return torch.zeros(FEATURES) if context is None else super().shift(context)


class TanhUndeclaredCodomain(Tanh):
    """Claims the real line as codomain, so latents outside (-1, 1) have no preimage."""

    codomain = constraints.real


# --- broken torch adapters -----------------------------------------------------------------------
class _WrongValueTransform(BijectorTransform):
    def _call(self, x: Tensor) -> Tensor:
        return super()._call(x) + 1.0


class _WrongLogDetTransform(BijectorTransform):
    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype)


class _WrongEventDimTransform(BijectorTransform):
    domain = constraints.real  # type: ignore[assignment]


class _NoCacheTransform(BijectorTransform):
    def __call__(self, x: Tensor) -> Tensor:
        return self._call(x)

    def _inv_call(self, y: Tensor) -> Tensor:
        return self._inverse(y)


class _BrokenInverseLink(BijectorTransform):
    @property
    def inv(self):
        return BijectorTransform(self.bijector, self.context).inv


def _with_transform(transform_class: type[BijectorTransform]) -> type[Linear]:
    class BrokenTransform(Linear):
        def as_transform(self, context=None, cache_size=1):
            return transform_class(self, context=context, cache_size=cache_size)

    BrokenTransform.__name__ = f"Linear{transform_class.__name__}"
    return BrokenTransform


BROKEN = [
    pytest.param(LogDetOffByConstant, "brute-force slogdet", id="log-det-off-by-constant"),
    pytest.param(LogDetWrongSign, "brute-force slogdet", id="log-det-wrong-sign"),
    pytest.param(
        LogDetWrongForOneElement, r"brute-force slogdet.*at index \(2,\)", id="one-element"
    ),
    pytest.param(NotTheInverse, r"inverse\(forward\(x\)\)", id="not-the-inverse"),
    pytest.param(WrongForwardShape, "forward_shape", id="forward-shape"),
    pytest.param(WrongInverseShape, "inverse_shape", id="inverse-shape"),
    pytest.param(LogDetSummedOverBatch, "log_abs_det has shape", id="log-det-summed-over-batch"),
    pytest.param(LogDetNotSummedOverEvent, "log_abs_det has shape", id="log-det-per-element"),
    pytest.param(MixesBatch, "batch elements are not independent", id="mixes-batch"),
    pytest.param(NonFiniteOutput, "forward's z has .* non-finite", id="non-finite-output"),
    pytest.param(
        NonFiniteLogDet, "forward's log_abs_det has .* non-finite", id="non-finite-log-det"
    ),
    pytest.param(
        InverseLogDetNotMinusForward, "inverse's log_abs_det", id="inverse-log-det-not-minus"
    ),
    pytest.param(ChangesDtype, "z has dtype torch.float32", id="changes-dtype"),
    pytest.param(
        _with_transform(_WrongValueTransform), r"as_transform\(\)\(x\)", id="transform-value"
    ),
    pytest.param(
        _with_transform(_WrongLogDetTransform),
        r"as_transform\(\)\.log_abs_det_jacobian",
        id="transform-log-det",
    ),
    pytest.param(
        _with_transform(_WrongEventDimTransform), "domain.event_dim", id="transform-event-dim"
    ),
    pytest.param(_with_transform(_NoCacheTransform), "cached input", id="transform-cache"),
    pytest.param(_with_transform(_BrokenInverseLink), r"t\.inv\.inv is not t", id="transform-inv"),
]


@pytest.mark.parametrize(("bijector_class", "message"), BROKEN)
@given(seed=seeds())
def test_broken_bijector_is_caught(bijector_class: type[Bijector], message: str, seed: int) -> None:
    with pytest.raises(AssertionError, match=message) as caught:
        check_bijector(bijector_class(), (FEATURES,), seed=seed)
    assert bijector_class.__name__ in str(caught.value), "the message must name the bijector"


@given(seed=seeds())
def test_missing_context_that_runs_is_caught(seed: int) -> None:
    with pytest.raises(AssertionError, match="ran without its context"):
        check_bijector(IgnoresMissingContext(), (FEATURES,), context_shape=(2,), seed=seed)


@given(seed=seeds())
def test_undeclared_codomain_is_caught(seed: int) -> None:
    # Latents drawn from the real line leave (-1, 1): their preimage is not finite.
    with pytest.raises(AssertionError, match="inverse of a drawn latent has .* non-finite"):
        check_bijector(TanhUndeclaredCodomain(), (FEATURES,), seed=seed, input_scale=3.0)


def test_failure_message_names_the_input() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"inverse\(forward\(x\)\)") as caught:
        check_bijector(NotTheInverse(), (FEATURES,), x=x)
    message = str(caught.value)
    assert "at index" in message and "starts [" in message, message


@pytest.mark.parametrize(
    ("bijector_class", "context_shape"),
    [(Linear, None), (Tanh, None), (ContextShift, (2,))],
    ids=["linear", "tanh", "context-shift"],
)
@given(seed=seeds())
def test_correct_bijectors_pass(bijector_class, context_shape, seed: int) -> None:
    for dtype in (torch.float64, torch.float32):
        check_bijector(
            bijector_class(), (FEATURES,), context_shape, seed=seed, dtype=dtype, batch_shape=(2, 2)
        )


def test_check_leaves_the_bijector_untouched() -> None:
    bijector = Linear()
    before = {name: value.clone() for name, value in bijector.state_dict().items()}
    check_bijector(bijector, (FEATURES,), perturb=0.5)
    for name, value in bijector.state_dict().items():
        assert torch.equal(value, before[name]), name
        assert value.dtype == torch.float32, name
