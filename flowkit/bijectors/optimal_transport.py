r"""Minibatch optimal transport: pairing base draws with data rows for flow matching."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ot_pairing"]

INSTALL_HINT = 'pip install "flowkit-torch[cnf]" (or pip install scipy)'


def _linear_sum_assignment() -> Any:
    """The assignment solver of scipy, imported on first use: flowkit runs without scipy."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise ImportError(
            "ot_pairing solves the assignment with scipy.optimize.linear_sum_assignment, and "
            f"scipy is not installed; install it with {INSTALL_HINT}"
        ) from None
    return linear_sum_assignment


def ot_pairing(x: Tensor, noise: Tensor) -> Tensor:
    r"""The rows of ``noise`` re-paired with the rows of ``x`` by the minibatch OT plan.

    With uniform weights on the :math:`N` data rows :math:`x_i` and the :math:`N` base draws
    :math:`\epsilon_j`, the exact optimal-transport plan for the squared Euclidean cost is a
    permutation (an assignment problem):

    .. math:: \sigma^\star = \arg\min_\sigma \sum_i \|x_i - \epsilon_{\sigma(i)}\|^2,

    and row :math:`i` of the result is :math:`\epsilon_{\sigma^\star(i)}`. Flow matching on these
    pairs is Tong et al.'s OT-CFM: the conditional paths cross less, so the learned field is
    straighter than with independent pairs. Only ``noise`` is permuted, so a context stays with
    its data row. The cost is computed in float64 on the CPU from detached tensors and solved by
    ``scipy.optimize.linear_sum_assignment`` (:math:`O(N^3)`; fine for batches of a few
    hundred).

    Args:
        x: Data rows, ``(N, D)``.
        noise: Base draws, ``(N, D)``.

    Returns:
        ``noise`` with its rows permuted, on its device and in its dtype, ``(N, D)``.

    Raises:
        ValueError: If the shapes differ or are not ``(N, D)``, or a value is not finite.
        ImportError: If scipy is not installed.

    References:
        Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf & Bengio, Improving and
        generalizing flow-based generative models with minibatch optimal transport (TMLR 2024).

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
        >>> ot_pairing(x, torch.tensor([[9.0, 9.0], [1.0, 0.0]]))
        tensor([[1., 0.],
                [9., 9.]])
    """
    if x.dim() != 2 or noise.shape != x.shape:
        raise ValueError(
            f"ot_pairing expects data and noise of one shape (N, D), got {tuple(x.shape)} and "
            f"{tuple(noise.shape)}"
        )
    data = x.detach().to("cpu", torch.float64)
    draws = noise.detach().to("cpu", torch.float64)
    if not (bool(torch.isfinite(data).all()) and bool(torch.isfinite(draws).all())):
        raise ValueError("ot_pairing expects finite data and noise, got NaN or infinity")
    if x.shape[0] < 2:
        return noise
    cost = (
        data.square().sum(-1, keepdim=True)
        + draws.square().sum(-1)
        - 2.0 * data @ draws.transpose(0, 1)
    )
    _, columns = _linear_sum_assignment()(cost.numpy())
    return noise[torch.as_tensor(columns, device=noise.device)]
