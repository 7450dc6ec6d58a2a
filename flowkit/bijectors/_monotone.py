"""Roots of increasing scalar functions, elementwise: safeguarded Newton in a bracket."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MAX_ITERATIONS", "solve_increasing"]

# Bisection alone halves the bracket each time, so 100 iterations take a bracket of width 2^40 to
# below float64's spacing near 1; Newton needs a handful once the bisection has brought it close.
MAX_ITERATIONS = 100
# Stop when the last step is below this many units in the last place of the iterate: Newton's
# step is then rounding noise of the residual.
TOLERANCE_ULPS = 4.0


def solve_increasing(
    function: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    low: Tensor,
    high: Tensor,
    max_iterations: int = MAX_ITERATIONS,
) -> Tensor:
    r"""Solve :math:`f(a) = t` elementwise for increasing :math:`f`, bracketed in :math:`[l, h]`.

    Newton's method, safeguarded as in Numerical Recipes' ``rtsafe``: a step that would leave the
    bracket, or that does not at least halve the step before last, is replaced by bisection, and
    every evaluation shrinks the bracket. It converges for any increasing :math:`f` with a positive
    derivative, quadratically once close. An element stops moving once its step is below a few
    units in the last place, so that its result does not depend on how long the other elements
    of the batch need.

    Args:
        function: Maps :math:`a` to :math:`(f(a), f'(a))`, elementwise, with :math:`f' > 0`.
        target: :math:`t`.
        low: :math:`l`, a lower bound of the root (broadcasting against ``target``).
        high: :math:`h`, an upper bound of the root.
        max_iterations: Bound on the number of evaluations.

    Returns:
        The root, shape of ``target``; computed without autograd.
    """
    with torch.no_grad():
        low, high = torch.broadcast_tensors(low.expand_as(target), high.expand_as(target))
        low, high = low.clone(), high.clone()
        tolerance = TOLERANCE_ULPS * torch.finfo(target.dtype).eps
        root = (low + high) / 2
        step = high - low
        step_before = step.clone()
        active = torch.ones_like(target, dtype=torch.bool)
        for _ in range(max_iterations):
            value, slope = function(root)
            residual = value - target
            # The root is an end of the bracket from now on (the midpoint at the start).
            low = torch.where(active & (residual < 0), root, low)
            high = torch.where(active & (residual > 0), root, high)
            newton = root - residual / slope
            slow = 2 * residual.abs() > (step_before * slope).abs()
            bisect = (newton < low) | (newton > high) | slow | ~torch.isfinite(newton)
            step_before = step
            midpoint = (low + high) / 2
            step = torch.where(bisect, midpoint - root, newton - root)
            root = torch.where(active, root + step, root)
            active = active & (step.abs() > tolerance * (1 + root.abs())) & (residual != 0)
            if not bool(active.any()):
                break
        return root
