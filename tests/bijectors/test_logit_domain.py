"""Regression tests: Logit with a margin accepts every value its inverse produces."""

from __future__ import annotations

import pytest
import torch

from flowkit.bijectors import Logit
from flowkit.testing import check_bijector


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_forward_accepts_the_inverse_of_any_latent(alpha):
    logit = Logit(alpha).double()
    z = torch.tensor([-12.0, -8.0, 0.0, 8.0, 12.0], dtype=torch.float64)
    x, inverse_log_abs_det = logit.inverse(z)
    margin = alpha / (1 - 2 * alpha)
    assert x.min() < 0 and x.max() > 1
    assert (x >= -margin).all() and (x <= 1 + margin).all()
    z_back, log_abs_det = logit(x)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(log_abs_det, -inverse_log_abs_det)


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_contract_over_the_whole_domain(alpha):
    check_bijector(Logit(alpha), (4,), batch_shape=(5,), input_scale=3.0)


def test_values_beyond_the_margin_are_rejected():
    with pytest.raises(ValueError, match="Logit expects input values in"):
        Logit(0.05)(torch.tensor([1.2]))
