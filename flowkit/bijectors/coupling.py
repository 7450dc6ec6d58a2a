"""Coupling bijectors (affine and additive) and their masks (channel halves, checkerboard)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._utils import accepts_context, call_network, check_event_shape, every_nth
from flowkit.bijectors.base import Bijector, Rebuilt, Shape

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "SCALE_FUNCTIONS",
    "channel_mask",
    "checkerboard_mask",
    "resolve_scale_fn",
]


def _glow_log_scale(h: Tensor) -> Tensor:
    # Glow's scale sigmoid(h + 2): starts near 0.88 for a zero-initialised network and stays in (0, 1).
    return F.logsigmoid(h + 2.0)


def _exp_log_scale(h: Tensor) -> Tensor:
    return h


# The softplus scale never falls below this, so its log (the log-determinant) stays finite however
# negative the network's output gets (nflows adds the same 1e-3).
MIN_SOFTPLUS_SCALE = 1e-3
# softplus(h + shift) + MIN_SOFTPLUS_SCALE is exactly 1 at h = 0: log(e^(1 - 1e-3) - 1).
_SOFTPLUS_SHIFT = math.log(math.expm1(1.0 - MIN_SOFTPLUS_SCALE))


def _softplus_log_scale(h: Tensor) -> Tensor:
    # Unlike exp, the scale grows only linearly in h; it is 1 at h = 0 and at least 1e-3.
    return torch.log(F.softplus(h + _SOFTPLUS_SHIFT) + MIN_SOFTPLUS_SCALE)


SCALE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": _glow_log_scale,
    "exp": _exp_log_scale,
    "softplus": _softplus_log_scale,
}
"""Named maps from the conditioner's raw scale output to the log of the scale."""

ScaleFunction = Union[str, Callable[[Tensor], Tensor]]


def resolve_scale_fn(scale_fn: ScaleFunction, owner: str) -> tuple[str, Callable[[Tensor], Tensor]]:
    """Look up a named scale function (or accept a callable); return ``(name, function)``.

    Raises:
        ValueError: Naming ``owner`` and the known names, if ``scale_fn`` is an unknown name.
    """
    if isinstance(scale_fn, str):
        if scale_fn not in SCALE_FUNCTIONS:
            raise ValueError(
                f"{owner} expects scale_fn in {sorted(SCALE_FUNCTIONS)} or a callable, "
                f"got {scale_fn!r}"
            )
        return scale_fn, SCALE_FUNCTIONS[scale_fn]
    if not callable(scale_fn):
        raise TypeError(f"{owner} expects scale_fn as a name or a callable, got {scale_fn!r}")
    return getattr(scale_fn, "__name__", "custom"), scale_fn


def channel_mask(channels: int, *, event_rank: int = 3, flip: bool = False) -> Tensor:
    """Mask keeping the first ``channels // 2`` channels (the last ones if ``flip``).

    Returns a bool tensor of shape ``(C,) + (1,) * (event_rank - 1)``; True marks the half passed
    through unchanged and fed to the conditioner. Glow keeps the first half.
    """
    mask = torch.arange(channels) < channels // 2
    if flip:
        mask = ~mask
    return mask.reshape((channels,) + (1,) * (event_rank - 1))


def checkerboard_mask(height: int, width: int, *, flip: bool = False) -> Tensor:
    """RealNVP's spatial checkerboard: True where ``(i + j)`` is even (odd if ``flip``).

    Returns a bool tensor of shape ``(1, H, W)`` that broadcasts over channels.
    """
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    mask = (rows + cols) % 2 == (1 if flip else 0)
    return mask.unsqueeze(0)


class Coupling(Bijector):
    r"""Base of coupling bijectors: one part of the input conditions an invertible map of the rest.

    The mask splits the event into :math:`x_a` (True, kept) and :math:`x_b` (False, transformed):
    :math:`z_a = x_a`, :math:`z_b = g(x_b; \theta)`, :math:`\theta = \mathrm{NN}(x_a, c)`. Because
    :math:`z_a = x_a`, the inverse recomputes :math:`\theta` from :math:`z_a` and inverts :math:`g`.

    A mask that splits along the first event dimension only (channels) runs in *split mode*: the
    conditioner receives just the ``C_a`` kept channels and returns ``P * C_b`` channels for the
    ``C_b`` transformed ones. Any other mask (e.g. a checkerboard) runs in *mask mode*: the
    conditioner receives ``x * mask`` and returns ``P * C`` channels, used where the mask is False.
    The ``P`` parameters of each element are interleaved along the channel axis
    (``theta[:, 0::P]`` is the first, as in Glow's official code).

    The conditioner is any ``nn.Module``; it receives the context as a second argument if its
    ``forward`` has a parameter named ``context``, and is called with ``x_a`` alone otherwise.

    Subclasses set ``params_per_element`` and implement ``_transform(x_b, theta)`` and
    ``_untransform(z_b, theta)``, each returning the output and the elementwise log-derivative
    (or None when it is zero). ``theta`` is what ``_unpack`` makes of the conditioner output: the
    ``P`` de-interleaved tensors by default.
    """

    params_per_element: int = 1

    def __init__(self, conditioner: nn.Module, mask: Tensor) -> None:
        super().__init__()
        if not isinstance(conditioner, nn.Module):
            raise TypeError(
                f"{type(self).__name__} expects an nn.Module conditioner, "
                f"got {type(conditioner).__name__}"
            )
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.dim() < 1:
            raise TypeError(
                f"{type(self).__name__} expects a bool mask with at least one dimension, "
                f"got dtype {mask.dtype} and shape {tuple(mask.shape)}"
            )
        if bool(mask.all()) or not bool(mask.any()):
            raise ValueError(
                f"{type(self).__name__} expects a mask with both True and False entries"
            )
        self.conditioner = conditioner
        self.pass_context = accepts_context(conditioner)
        self.event_rank = mask.dim()
        self.split_mode = all(size == 1 for size in mask.shape[1:])
        channels = mask.shape[0]
        if self.split_mode:
            keep = mask.flatten()
            kept = torch.nonzero(keep).flatten()
            changed = torch.nonzero(~keep).flatten()
            self.channels = channels
            self.kept_channels = kept.numel()
            self.register_buffer("kept_index", kept)
            self.register_buffer("changed_index", changed)
            self.register_buffer("merge_index", torch.argsort(torch.cat([kept, changed])))
            # Contiguous halves (Glow's case) are sliced, not gathered.
            self.contiguous = bool(torch.equal(kept, torch.arange(kept.numel())))
        else:
            self.channels = channels if channels > 1 else None
            self.register_buffer("mask", mask)

    def _pattern(self) -> tuple[int | None, ...]:
        if self.split_mode:
            return (self.channels,) + (None,) * (self.event_rank - 1)
        return tuple(None if s == 1 else s for s in self.mask.shape)

    def _condition(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        return call_network(self.conditioner, x_a, self.event_rank, context, self.pass_context)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dim = x.dim() - self.event_rank
        if self.contiguous:
            return x.narrow(dim, 0, self.kept_channels), x.narrow(
                dim, self.kept_channels, self.channels - self.kept_channels
            )
        return x.index_select(dim, self.kept_index), x.index_select(dim, self.changed_index)

    def _merge(self, x_a: Tensor, z_b: Tensor) -> Tensor:
        dim = x_a.dim() - self.event_rank
        merged = torch.cat([x_a, z_b], dim=dim)
        return merged if self.contiguous else merged.index_select(dim, self.merge_index)

    def _params(self, x_a: Tensor, context: Tensor | None, target: Tensor) -> tuple[Tensor, ...]:
        theta = self._condition(x_a, context)
        count = self.params_per_element
        dim = theta.dim() - self.event_rank
        expected = count * target.shape[dim]
        if theta.dim() != target.dim() or theta.shape[dim] != expected:
            raise ValueError(
                f"{type(self).__name__}: the conditioner must return {expected} channels "
                f"({count} per transformed channel) in a tensor shaped like "
                f"{tuple(target.shape)}, got shape {tuple(theta.shape)}"
            )
        return self._unpack(theta, dim)

    def _unpack(self, theta: Tensor, dim: int) -> tuple[Tensor, ...]:
        """Split the conditioner output into the parameters ``_transform`` receives.

        By default the ``P`` interleaved tensors ``theta[:, p::P]``, each shaped like ``x_b``.
        Subclasses with many parameters per element (splines) may instead return one tensor with
        the ``P`` parameters of each element on a new last axis.
        """
        count = self.params_per_element
        if count == 1:
            return (theta,)
        return tuple(every_nth(theta, dim, i, count) for i in range(count))

    def _couple(self, x: Tensor, context: Tensor | None, invert: bool) -> tuple[Tensor, Tensor]:
        what = "latent" if invert else "input"
        check_event_shape(type(self).__name__, x, self._pattern(), what)
        batch_rank = x.dim() - self.event_rank
        step = self._untransform if invert else self._transform
        if self.split_mode:
            x_a, x_b = self._split(x)
            z_b, log_derivative = step(x_b, self._params(x_a, context, x_b))
            z = self._merge(x_a, z_b)
        else:
            mask = self.mask
            z_all, log_derivative = step(x, self._params(x * mask, context, x))
            z = torch.where(mask, x, z_all)
            if log_derivative is not None:
                log_derivative = log_derivative.masked_fill(mask, 0.0)
        return z, _sum_log_derivative(log_derivative, x, batch_rank)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, invert=False)

    def rebuild_for_backward(self, z: Tensor, context: Tensor | None = None) -> Rebuilt:
        # z_a = x_a, so one conditioner pass serves both the inversion and the re-run graph.
        if not self.split_mode:
            return super().rebuild_for_backward(z, context)
        batch_rank = z.dim() - self.event_rank
        z_a, z_b = self._split(z)
        x_a = z_a.detach().requires_grad_(True)
        with torch.enable_grad():
            theta = self._params(x_a, context, z_b)
        with torch.no_grad():
            x_b, _ = self._untransform(z_b, tuple(t.detach() for t in theta))
        x_b = x_b.requires_grad_(True)
        with torch.enable_grad():
            z_b_again, log_derivative = self._transform(x_b, theta)
            z_again = self._merge(x_a, z_b_again)
            log_abs_det = _sum_log_derivative(log_derivative, z, batch_rank)
        x = self._merge(x_a.detach(), x_b.detach())
        return (
            x,
            (x_a, x_b),
            z_again,
            log_abs_det,
            lambda grads: self._merge(_zero_if_none(grads[0], x_a), _zero_if_none(grads[1], x_b)),
        )

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, invert=True)

    def forward_shape(self, shape: Shape) -> torch.Size:
        check_event_shape(type(self).__name__, shape, self._pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return self.forward_shape(shape)

    def _transform(self, x_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _untransform(self, z_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


def _sum_log_derivative(log_derivative: Tensor | None, x: Tensor, batch_rank: int) -> Tensor:
    """The log-determinant of a step: its elementwise log-derivatives summed over the event.

    None stands for a volume-preserving step, whose log-determinant is zero.
    """
    if log_derivative is None:
        return x.new_zeros(x.shape[:batch_rank])
    return log_derivative.flatten(batch_rank).sum(-1)


def _zero_if_none(gradient: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if gradient is None else gradient


class AffineCoupling(Coupling):
    r"""Affine coupling (RealNVP, Glow): :math:`z_b = x_b \odot s + t`, with :math:`(t, s)` from the conditioner.

    The conditioner outputs raw shift and scale interleaved along channels (``[:, 0::2]`` shift,
    ``[:, 1::2]`` scale). The raw scale :math:`h` becomes :math:`\log s` through ``scale_fn``:
    ``"sigmoid"`` (Glow's :math:`s = \sigma(h + 2)`, the default), ``"exp"`` (:math:`s = e^h`,
    RealNVP), ``"softplus"``, or any callable :math:`h \mapsto \log s`.
    ``shift_first=True`` applies the shift before the scale, :math:`z_b = (x_b + t) \odot s`, as
    Glow's official code does.

    :math:`\log|\det J| = \sum \log s` over the transformed elements.

    Args:
        conditioner: Network mapping ``x_a`` (and context, if its forward takes one) to ``2 * C_b``
            channels (split mode) or ``2 * C`` channels (mask mode).
        mask: Bool tensor, True for the kept part; see :func:`channel_mask` and
            :func:`checkerboard_mask`. Its number of dimensions is the event rank.
        scale_fn: How the raw scale becomes a log-scale.
        shift_first: Shift before scaling (official Glow) instead of after (RealNVP).

    Shapes:
        ``x``: ``(*batch, C, H, W)`` (or ``(*batch, C)`` with a 1-D mask); ``z`` the same;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017);
        Kingma & Dhariwal, Glow (2018), 3.4.

    Example:
        >>> from flowkit.nn import GlowConditioner
        >>> coupling = AffineCoupling(GlowConditioner(2, 4, hidden_channels=8), channel_mask(4))
        >>> z, log_abs_det = coupling(torch.randn(8, 4, 16, 16))
        >>> log_abs_det.shape
        torch.Size([8])
    """

    params_per_element = 2

    def __init__(
        self,
        conditioner: nn.Module,
        mask: Tensor,
        *,
        scale_fn: ScaleFunction = "sigmoid",
        shift_first: bool = False,
    ) -> None:
        super().__init__(conditioner, mask)
        self.scale_fn_name, self.log_scale_fn = resolve_scale_fn(scale_fn, "AffineCoupling")
        self.shift_first = bool(shift_first)

    def _transform(self, x_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        shift, raw_scale = theta
        log_scale = self.log_scale_fn(raw_scale)
        scale = log_scale.exp()
        z_b = (x_b + shift) * scale if self.shift_first else x_b * scale + shift
        return z_b, log_scale

    def _untransform(self, z_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        shift, raw_scale = theta
        log_scale = self.log_scale_fn(raw_scale)
        inverse_scale = torch.exp(-log_scale)
        x_b = z_b * inverse_scale - shift if self.shift_first else (z_b - shift) * inverse_scale
        return x_b, -log_scale

    def extra_repr(self) -> str:
        return f"scale_fn={self.scale_fn_name!r}, shift_first={self.shift_first}"


class AdditiveCoupling(Coupling):
    r"""Additive coupling (NICE, Glow's volume-preserving variant): :math:`z_b = x_b + t(x_a)`.

    :math:`\log|\det J| = 0`.

    Args:
        conditioner: Network mapping ``x_a`` (and context) to ``C_b`` channels (split mode) or
            ``C`` channels (mask mode).
        mask: Bool tensor, True for the kept part.

    References:
        Dinh, Krueger & Bengio, NICE (2015); Kingma & Dhariwal, Glow (2018).

    Example:
        >>> from flowkit.nn import GlowConditioner
        >>> coupling = AdditiveCoupling(GlowConditioner(2, 2, hidden_channels=8), channel_mask(4))
        >>> z, log_abs_det = coupling(torch.randn(8, 4, 16, 16))
    """

    params_per_element = 1

    def _transform(self, x_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        return x_b + theta[0], None

    def _untransform(self, z_b: Tensor, theta: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        return z_b - theta[0], None
