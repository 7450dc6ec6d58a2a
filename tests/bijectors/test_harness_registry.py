"""check_bijector on every registered bijector, in float64 and float32, under hypothesis."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit import bijectors
from flowkit.bijectors import Bijector, Elementwise
from flowkit.testing import check_bijector
from flowkit.testing.strategies import scales, seeds
from tests.registry import REGISTRY, Case, example_shape, make_context

# Abstract bases: they define a contract and shared machinery but cannot be built on their own,
# so their concrete subclasses carry the registry entries.
ABSTRACT_BIJECTORS = {
    Bijector,  # the contract itself; forward raises NotImplementedError
    Elementwise,  # needs _forward/_inverse from a concrete map
}


def _check(case: Case, data: st.DataObject, dtype: torch.dtype, max_input_scale: float) -> None:
    max_input_scale = min(max_input_scale, case.max_input_scale)
    max_perturb = case.max_perturb
    if dtype == torch.float32 and case.float32_max_perturb is not None:
        max_perturb = min(max_perturb, case.float32_max_perturb)
    event_shape = data.draw(case.event_shapes, label="event_shape")
    batch_shape = data.draw(case.batch_shapes, label="batch_shape")
    seed = data.draw(seeds(), label="seed")
    input_scale = data.draw(scales(0.3, max_input_scale), label="input_scale")
    perturb = data.draw(scales(0.02, max_perturb), label="perturb")
    torch.manual_seed(seed)
    bijector = case.build(event_shape)
    context = make_context(case, batch_shape, torch.Generator().manual_seed(seed), dtype)
    check_bijector(
        bijector,
        event_shape,
        case.context_shape,
        context=context,
        batch_shape=batch_shape,
        dtype=dtype,
        seed=seed,
        input_scale=input_scale,
        perturb=perturb,
        requires_context=case.conditional,
    )


@pytest.mark.parametrize("case", REGISTRY, ids=lambda case: case.id)
@given(data=st.data())
def test_contract_float64(case: Case, data: st.DataObject) -> None:
    _check(case, data, torch.float64, max_input_scale=2.5)


@pytest.mark.parametrize("case", REGISTRY, ids=lambda case: case.id)
@given(data=st.data())
def test_contract_float32(case: Case, data: st.DataObject) -> None:
    # check_bijector's default float32 tolerance is the documented one (default_tolerance); inputs
    # stay within a few units, where the squashing maps (sigmoid, tanh) keep that precision.
    _check(case, data, torch.float32, max_input_scale=1.5)


def test_registry_ids_are_unique() -> None:
    ids = [case.id for case in REGISTRY]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_registry_covers_every_public_bijector() -> None:
    exported = [getattr(bijectors, name) for name in bijectors.__all__]
    public = {c for c in exported if isinstance(c, type) and issubclass(c, Bijector)}
    assert ABSTRACT_BIJECTORS <= public, "the abstract list names a class that is not exported"
    covered = {type(case.build(example_shape(case))) for case in REGISTRY}
    missing = sorted(c.__name__ for c in public - ABSTRACT_BIJECTORS - covered)
    assert not missing, f"public bijectors without a registry entry: {missing}"
