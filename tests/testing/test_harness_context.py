"""check_bijector varies the context per batch element, and refuses what is not a Bijector."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.distributions.transforms import ExpTransform

from flowkit import from_transform
from flowkit.bijectors import Bijector
from flowkit.testing import check_bijector
from tests.helpers import raises_with
from tests.testing import test_harness_catches as catches

FEATURES = catches.FEATURES
CONTEXT_FEATURES = 2


class ContextShift(catches.ContextShift):
    """A correct conditional map: z = x + context @ M, each row shifted by its own context.

    The correct map of ``test_harness_catches``, with a different value in every entry of M, so
    that each context feature moves each output feature differently.
    """

    def __init__(self) -> None:
        super().__init__(CONTEXT_FEATURES)
        with torch.no_grad():
            self.mix.copy_(torch.linspace(-1.0, 1.0, CONTEXT_FEATURES * FEATURES).reshape(2, 3))


class ContextMixesRows(ContextShift):
    """Broken: every row is shifted by the batch mean of the contexts, so rows leak into each other.

    Its inputs never mix, so the round trip, the Jacobian (which is the identity) and the
    per-input independence checks all pass; only varying one row's context exposes it.
    """

    def shift(self, context: Tensor | None) -> Tensor:
        shift = super().shift(context)
        return shift.mean(0, keepdim=True).expand(shift.shape)


class LabelMixesRows(Bijector):
    """Broken for integer contexts: each row is shifted by the sum of every row's class label."""

    event_rank = 1

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def shift(self, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError("LabelMixesRows expects a context, got None")
        return self.scale * context.sum().to(self.scale.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x + self.shift(context), x.new_zeros(x.shape[:-1])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z - self.shift(context), z.new_zeros(z.shape[:-1])


def test_correct_conditional_bijector_passes() -> None:
    check_bijector(ContextShift(), (FEATURES,), (CONTEXT_FEATURES,), batch_shape=(4,))
    # A context given once for the whole batch is expanded to one row per element and varied.
    check_bijector(
        ContextShift(), (FEATURES,), (CONTEXT_FEATURES,), context=torch.randn(CONTEXT_FEATURES)
    )


@pytest.mark.parametrize("batch_shape", [(4,), (2, 3)], ids=["one-batch-dim", "two-batch-dims"])
def test_context_that_mixes_rows_is_caught(batch_shape: tuple[int, ...]) -> None:
    raises_with(
        AssertionError,
        lambda: check_bijector(
            ContextMixesRows(), (FEATURES,), (CONTEXT_FEATURES,), batch_shape=batch_shape
        ),
        "check_bijector(ContextMixesRows)",
        "not independent",
        "changing the context of element",
        "another element's z",
    )


def test_shared_context_that_mixes_rows_is_caught() -> None:
    # The user's context is the same for every row; the harness still varies one row of it.
    raises_with(
        AssertionError,
        lambda: check_bijector(
            ContextMixesRows(),
            (FEATURES,),
            (CONTEXT_FEATURES,),
            context=torch.randn(CONTEXT_FEATURES),
        ),
        "changing the context of element (0,)",
    )


def test_integer_context_that_mixes_rows_is_caught() -> None:
    labels = torch.tensor([0, 2, 1])
    raises_with(
        AssertionError,
        lambda: check_bijector(
            LabelMixesRows(), (FEATURES,), context=labels, requires_context=True
        ),
        "changing the context of element (0,)",
    )


def test_not_a_bijector_is_a_type_error() -> None:
    raises_with(
        TypeError,
        lambda: check_bijector(nn.Linear(3, 3), (3,)),
        "check_bijector expects a flowkit Bijector",
        "Linear",
        "from_transform",
    )
    raises_with(
        TypeError,
        lambda: check_bijector(ExpTransform(), (3,)),
        "ExpTransform",
        "wrap a torch.distributions Transform with flowkit.from_transform",
    )
    # The wrapped transform is accepted.
    check_bijector(from_transform(ExpTransform()), (3,))


def test_bad_shapes_are_named() -> None:
    raises_with(TypeError, lambda: check_bijector(ContextShift(), 3), "event_shape", "int")
    raises_with(
        ValueError,
        lambda: check_bijector(ContextShift(), (FEATURES,), (CONTEXT_FEATURES,), batch_shape=(0,)),
        "batch_shape",
        "(0,)",
    )
