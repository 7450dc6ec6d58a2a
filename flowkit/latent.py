"""Latent-space operations on a trained flow: interpolation and attribute manipulation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit._checks import MAX_STEPS, check_float, check_int
from flowkit._tensors import check_event_shape
from flowkit.distributions import Flow

__all__ = ["attribute_direction", "interpolate", "manipulate"]


@torch.no_grad()
def interpolate(
    flow: Flow, x_a: Tensor, x_b: Tensor, steps: int = 8, context: Tensor | None = None
) -> Tensor:
    r"""Decode evenly spaced points on the line between the latents of ``x_a`` and ``x_b``.

    :math:`x_t = f^{-1}((1 - t) f(x_a) + t f(x_b))` for ``steps`` values of :math:`t` in
    :math:`[0, 1]` (Glow, section 6).

    Args:
        flow: A trained flow.
        x_a: One example, shape ``event_shape``.
        x_b: Another example of the same shape.
        steps: Number of points, ends included (at least 2).
        context: Context for conditional flows (one row, used for both ends).

    Returns:
        Tensor of shape ``(steps, *event_shape)``; the ends reconstruct ``x_a`` and ``x_b``.
    """
    _check_flow("interpolate", flow)
    steps = check_int("interpolate", "steps", steps, 2, MAX_STEPS)
    _check_example("interpolate", flow, "x_a", x_a)
    _check_example("interpolate", flow, "x_b", x_b)
    z = flow.encode(torch.stack([x_a, x_b]), _pair(context))
    t = torch.linspace(0.0, 1.0, steps, dtype=z.dtype, device=z.device).view(
        -1, *([1] * (z.dim() - 1))
    )
    path = (1 - t) * z[0] + t * z[1]
    return flow.decode(path, _repeat(context, steps))


@torch.no_grad()
def attribute_direction(
    flow: Flow,
    x: Tensor,
    has_attribute: Tensor,
    *,
    context: Tensor | None = None,
    batch_size: int = 256,
) -> Tensor:
    r"""Glow's attribute direction: mean latent with the attribute minus mean latent without it.

    :math:`\Delta = \bar z_{+} - \bar z_{-}` over the latents of ``x`` (section 6 of the paper).
    Where a data set has class labels but no attributes, "has the attribute" means "belongs to
    class k".

    Args:
        flow: A trained flow.
        x: Examples, shape ``(N, *event_shape)``.
        has_attribute: Bool tensor ``(N,)``; both values must occur.
        context: Context rows for conditional flows, shape ``(N, *context_shape)``.
        batch_size: Examples encoded at a time.

    Returns:
        The direction, shape ``latent_shape``.
    """
    owner = "attribute_direction"
    _check_flow(owner, flow)
    if not isinstance(x, Tensor) or x.dim() != len(flow.event_shape) + 1:
        raise ValueError(
            f"{owner} expects x of shape (N, {', '.join(map(str, flow.event_shape))}) (a batch of "
            f"the flow's examples), got {_describe(x)}"
        )
    check_event_shape(owner, x, tuple(flow.event_shape), "x")
    if not isinstance(has_attribute, Tensor) or has_attribute.dtype != torch.bool:
        raise TypeError(
            f"{owner} expects has_attribute as a bool tensor (True where the example has the "
            f"attribute), got {_describe(has_attribute)}; compare labels to a class, e.g. "
            "labels == k"
        )
    if has_attribute.shape != x.shape[:1]:
        raise ValueError(
            f"{owner} expects one flag per example ({x.shape[0]}), got shape "
            f"{tuple(has_attribute.shape)}"
        )
    batch_size = check_int(owner, "batch_size", batch_size, 1)
    positives, negatives = int(has_attribute.sum()), int((~has_attribute).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"attribute_direction needs examples with and without the attribute, got {positives} "
            f"with and {negatives} without"
        )
    sums: list[Tensor | None] = [None, None]
    for start in range(0, x.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        z = flow.encode(x[chunk], None if context is None else context[chunk]).double()
        flags = has_attribute[chunk].to(z.device)
        for index, mask in enumerate((flags, ~flags)):
            part = z[mask].sum(0)
            previous = sums[index]
            sums[index] = part if previous is None else previous + part
    positive_sum, negative_sum = sums
    # Both are set: x has at least one example, and every chunk adds to both sums.
    assert positive_sum is not None and negative_sum is not None
    direction = positive_sum / positives - negative_sum / negatives
    return direction.to(torch.get_default_dtype())


@torch.no_grad()
def manipulate(
    flow: Flow,
    x: Tensor,
    direction: Tensor,
    scales: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0),
    context: Tensor | None = None,
) -> Tensor:
    r"""Move one example along a latent direction: :math:`f^{-1}(f(x) + \alpha \Delta)` per scale.

    Args:
        flow: A trained flow.
        x: One example, shape ``event_shape``.
        direction: A latent direction, shape ``latent_shape`` (see :func:`attribute_direction`).
        scales: Finite multiples :math:`\alpha` of the direction, at least one.
        context: Context for conditional flows (one row, used for every scale).

    Returns:
        Tensor of shape ``(len(scales), *event_shape)``; scale 0 reconstructs ``x``.
    """
    _check_flow("manipulate", flow)
    _check_example("manipulate", flow, "x", x)
    if not isinstance(direction, Tensor) or tuple(direction.shape) != tuple(flow.latent_shape):
        raise ValueError(
            f"manipulate expects direction of the flow's latent shape "
            f"{tuple(flow.latent_shape)}, got {_describe(direction)}"
        )
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise TypeError(
            f"manipulate expects scales as a non-empty sequence of numbers, got {scales!r}"
        )
    for index, scale in enumerate(scales):
        check_float("manipulate", f"scales[{index}]", scale)
    z = flow.encode(x.unsqueeze(0), None if context is None else context.unsqueeze(0))[0]
    alphas = torch.tensor(list(scales), dtype=z.dtype, device=z.device).view(-1, *([1] * z.dim()))
    return flow.decode(z + alphas * direction.to(z), _repeat(context, len(scales)))


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def _check_flow(owner: str, flow: object) -> None:
    if not isinstance(flow, Flow):
        raise TypeError(f"{owner} expects a flowkit Flow, got {type(flow).__name__}")


def _check_example(owner: str, flow: Flow, name: str, x: object) -> None:
    """One example of the flow's data: exactly ``event_shape``, no batch dimension."""
    if not isinstance(x, Tensor) or tuple(x.shape) != tuple(flow.event_shape):
        raise ValueError(
            f"{owner} expects {name} as one example of the flow's event shape "
            f"{tuple(flow.event_shape)} (no batch dimension), got {_describe(x)}"
        )


def _pair(context: Tensor | None) -> Tensor | None:
    return None if context is None else torch.stack([context, context])


def _repeat(context: Tensor | None, count: int) -> Tensor | None:
    return None if context is None else context.unsqueeze(0).expand((count,) + context.shape)
