"""Coupling bijectors (a conditioner, a split, an elementwise map) and their masks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit._checks import accepts_context
from flowkit._tensors import check_event_shape
from flowkit.bijectors._conditioners import call_network
from flowkit.bijectors._state import flatten_state_of
from flowkit.bijectors.base import Bijector, Rebuilt, Shape
from flowkit.bijectors.maps import (
    AdditiveMap,
    AffineMap,
    ElementwiseMap,
    Params,
    check_conditioner_and_map,
)
from flowkit.bijectors.scale import ScaleFunction
from flowkit.bijectors.splits import ChannelSplit, Split, split_for

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "channel_mask",
    "checkerboard_mask",
]


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
    r"""Coupling bijector: one part of the input conditions an elementwise map of the rest.

    The split divides the event into :math:`x_a` (kept) and :math:`x_b` (transformed):
    :math:`z_a = x_a`, :math:`z_b = g(x_b; \theta)`, :math:`\theta = \mathrm{NN}(x_a, c)`, with
    :math:`g` the elementwise map ``transform``. Because :math:`z_a = x_a`, the inverse recomputes
    :math:`\theta` from :math:`z_a` and applies :math:`g^{-1}`:
    :math:`x_b = g^{-1}(z_b; \theta)`. :math:`\log|\det J| = \sum_b \log|g'(x_b; \theta)|`.

    A bool mask gives the split (see :func:`~flowkit.bijectors.splits.split_for`): one that varies
    along the first event dimension only (a channel or vector mask) makes a
    :class:`~flowkit.bijectors.ChannelSplit`, whose conditioner receives just the ``C_a`` kept
    channels and returns ``P * C_b`` channels for the ``C_b`` transformed ones; any other mask (a
    checkerboard) makes a :class:`~flowkit.bijectors.MaskSplit`, whose conditioner receives
    ``x * mask`` and returns ``P * C`` channels, used where the mask is False. The ``P``
    parameters of each element are adjacent along the channel axis (channel ``j * P + p`` is
    parameter ``p`` of element ``j``, as in Glow's official code).

    The conditioner is any ``nn.Module``; it receives the context as a second argument if its
    ``forward`` has a parameter named ``context``, and is called with ``x_a`` alone otherwise.

    Args:
        conditioner: Network mapping ``x_a`` (and context) to the map's raw parameters.
        mask: Bool tensor, True for the kept part (its number of dimensions is the event rank),
            or a :class:`~flowkit.bijectors.Split`.
        transform: The elementwise map :math:`g`, e.g. :class:`~flowkit.bijectors.AffineMap`.

    Shapes:
        ``x``: ``(*batch, *event)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Dinh, Krueger & Bengio, NICE (2015); Dinh, Sohl-Dickstein & Bengio, Real NVP (2017).

    Example:
        >>> from flowkit.bijectors import SplineMap
        >>> from flowkit.nn import MLP
        >>> coupling = Coupling(MLP(2, 2 * 11), channel_mask(4, event_rank=1), SplineMap(bins=4))
        >>> z, log_abs_det = coupling(torch.randn(5, 4))
        >>> log_abs_det.shape
        torch.Size([5])
    """

    conditioner: nn.Module
    transform: ElementwiseMap
    splitter: Split

    def __init__(
        self, conditioner: nn.Module, mask: Tensor | Split, transform: ElementwiseMap
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_conditioner_and_map(owner, conditioner, transform)
        # Registration order fixes the parameters' order, which optimizer checkpoints rely on.
        self.conditioner = conditioner
        self.transform = transform
        self.splitter = split_for(mask, owner)
        self.pass_context = accepts_context(conditioner)
        self.event_rank = self.splitter.event_rank
        flatten_state_of(self, ("transform", "splitter"))

    @property
    def kept_index(self) -> Tensor:
        """Indices of the kept channels (for a channel split)."""
        splitter = self.splitter
        if not isinstance(splitter, ChannelSplit):
            raise AttributeError(f"a {type(splitter).__name__} keeps no channel indices")
        return splitter.kept_index

    def _params(self, x_a: Tensor, context: Tensor | None, target: Tensor) -> Params:
        theta = call_network(self.conditioner, x_a, self.event_rank, context, self.pass_context)
        count = self.transform.params_per_element
        dim = theta.dim() - self.event_rank
        expected = count * target.shape[dim]
        if theta.dim() != target.dim() or theta.shape[dim] != expected:
            raise ValueError(
                f"{type(self).__name__}: the conditioner must return {expected} channels "
                f"({count} per transformed channel) in a tensor shaped like "
                f"{tuple(target.shape)}, got shape {tuple(theta.shape)}"
            )
        return self.transform.unpack(theta.unflatten(dim, (-1, count)), dim + 1)

    def _couple(self, x: Tensor, context: Tensor | None, invert: bool) -> tuple[Tensor, Tensor]:
        check_event_shape(
            type(self).__name__, x, self.splitter.pattern(), "latent" if invert else "input"
        )
        step = self.transform.inverse if invert else self.transform.forward
        x_a, x_b = self.splitter.split(x)
        y_b, log_derivative = step(x_b, self._params(x_a, context, x_b))
        return self.splitter.merge(x_a, y_b), self._log_abs_det(log_derivative, x)

    def _log_abs_det(self, log_derivative: Tensor | None, x: Tensor) -> Tensor:
        """The elementwise log-derivatives of the transformed part, summed over the event.

        None stands for a volume-preserving map, whose log-determinant is zero.
        """
        batch_rank = x.dim() - self.event_rank
        if log_derivative is None:
            return x.new_zeros(x.shape[:batch_rank])
        return self.splitter.only_transformed(log_derivative).flatten(batch_rank).sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Keep ``x_a``, map ``x_b`` given it; return ``(z, log_abs_det)``."""
        return self._couple(x, context, invert=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Keep ``z_a``, invert the map of ``z_b`` given it; return ``(x, log_abs_det)``."""
        return self._couple(z, context, invert=True)

    def rebuild_for_backward(self, z: Tensor, context: Tensor | None = None) -> Rebuilt:
        """Rebuild the input and re-run the coupling with a single conditioner pass."""
        # z_a = x_a, so one conditioner pass serves both the inversion and the re-run graph.
        z_a, z_b = self.splitter.split(z)
        x_a = z_a.detach().requires_grad_(True)
        with torch.enable_grad():
            theta = self._params(x_a, context, z_b)
        with torch.no_grad():
            x_b, _ = self.transform.inverse(z_b, tuple(t.detach() for t in theta))
            x = self.splitter.merge(z_a, x_b)
        # The part the map sees in forward (for a mask split, all of x).
        x_b = self.splitter.split(x)[1].detach().requires_grad_(True)
        with torch.enable_grad():
            z_b_again, log_derivative = self.transform(x_b, theta)
            z_again = self.splitter.merge(x_a, z_b_again)
            log_abs_det = self._log_abs_det(log_derivative, z)
        return (
            x,
            (x_a, x_b),
            z_again,
            log_abs_det,
            lambda grads: self.splitter.merge(
                _zero_if_none(grads[0], x_a), _zero_if_none(grads[1], x_b)
            ),
        )

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking it against the split's event pattern."""
        check_event_shape(type(self).__name__, shape, self.splitter.pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)


def _zero_if_none(gradient: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if gradient is None else gradient


class AffineCoupling(Coupling):
    r"""Affine coupling (RealNVP, Glow): :math:`z_b = x_b \odot s + t`, :math:`(t, s)` from a net.

    A :class:`Coupling` with an :class:`~flowkit.bijectors.AffineMap`. The conditioner outputs raw
    shift and scale interleaved along channels (``[:, 0::2]`` shift, ``[:, 1::2]`` scale). The raw
    scale :math:`h` becomes :math:`\log s` through ``scale_fn``: ``"sigmoid"`` (Glow's
    :math:`s = \sigma(h + 2)`, the default), ``"exp"`` (:math:`s = e^h`, RealNVP), ``"softplus"``,
    or any callable :math:`h \mapsto \log s`. ``shift_first=True`` applies the shift before the
    scale, :math:`z_b = (x_b + t) \odot s`, as Glow's official code does.

    :math:`\log|\det J| = \sum \log s` over the transformed elements.

    Args:
        conditioner: Network mapping ``x_a`` (and context, if its forward takes one) to ``2 * C_b``
            channels (channel split) or ``2 * C`` channels (mask split).
        mask: Bool tensor, True for the kept part; see :func:`channel_mask` and
            :func:`checkerboard_mask`. Its number of dimensions is the event rank. A
            :class:`~flowkit.bijectors.Split` is accepted too.
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

    transform: AffineMap

    def __init__(
        self,
        conditioner: nn.Module,
        mask: Tensor | Split,
        *,
        scale_fn: ScaleFunction = "sigmoid",
        shift_first: bool = False,
    ) -> None:
        super().__init__(conditioner, mask, AffineMap(scale_fn, shift_first=shift_first))


class AdditiveCoupling(Coupling):
    r"""Additive coupling (NICE, Glow's volume-preserving variant): :math:`z_b = x_b + t(x_a)`.

    A :class:`Coupling` with an :class:`~flowkit.bijectors.AdditiveMap`. :math:`\log|\det J| = 0`.

    Args:
        conditioner: Network mapping ``x_a`` (and context) to ``C_b`` channels (channel split) or
            ``C`` channels (mask split).
        mask: Bool tensor, True for the kept part, or a :class:`~flowkit.bijectors.Split`.

    References:
        Dinh, Krueger & Bengio, NICE (2015); Kingma & Dhariwal, Glow (2018).

    Example:
        >>> from flowkit.nn import GlowConditioner
        >>> coupling = AdditiveCoupling(GlowConditioner(2, 2, hidden_channels=8), channel_mask(4))
        >>> z, log_abs_det = coupling(torch.randn(8, 4, 16, 16))
    """

    def __init__(self, conditioner: nn.Module, mask: Tensor | Split) -> None:
        super().__init__(conditioner, mask, AdditiveMap())
