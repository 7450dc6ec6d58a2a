"""The check that values lie in a bijector's domain (or codomain) while validation is on."""

from __future__ import annotations

from torch import Tensor
from torch.distributions import constraints

from flowkit._tensors import validation_enabled

__all__ = ["check_support"]


def check_support(
    name: str, x: Tensor, support: constraints.Constraint, what: str = "input"
) -> None:
    """Raise a ValueError if ``x`` leaves ``support`` (only while validation is enabled).

    The real line accepts everything, infinities included, so it costs nothing. Meta tensors carry
    no values and pass.
    """
    if support is constraints.real or not validation_enabled() or x.device.type == "meta":
        return
    inside = support.check(x)
    if not bool(inside.all()):
        outside = ~inside
        first = tuple(int(i) for i in outside.nonzero()[0])
        # An event constraint marks whole events: show the start of the first one outside.
        bad = x[first].detach().flatten()
        shown = bad[0].item() if bad.numel() == 1 else [round(v, 6) for v in bad[:6].tolist()]
        raise ValueError(
            f"{name} expects {what} values in {support}, got {int(outside.sum())} "
            f"{'' if bad.numel() == 1 else 'event(s) '}outside it (first at index {first}: "
            f"{shown})"
        )
