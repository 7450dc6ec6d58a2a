"""Autoregressive bijectors: an autoregressive conditioner and an elementwise map."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flowkit._checks import accepts_context
from flowkit._tensors import check_dtype, check_event_shape
from flowkit.bijectors._conditioners import call_network
from flowkit.bijectors._state import flatten_state_of
from flowkit.bijectors.base import Bijector, Inverse, Shape
from flowkit.bijectors.maps import AffineMap, ElementwiseMap, Params, check_conditioner_and_map
from flowkit.bijectors.scale import ScaleFunction
from flowkit.nn.made import MADE, Order

__all__ = ["Autoregressive", "InverseAutoregressive", "MaskedAffineAutoregressive"]


class Autoregressive(Bijector):
    r"""Autoregressive bijector: :math:`z_i = g(x_i; \theta_i(x_{<i}, c))`, :math:`g` elementwise.

    The conditioner maps :math:`x` (and the context :math:`c`) to the raw parameters of every
    element, with the autoregressive property: the parameters of an element depend only on the
    elements before it in an order. The Jacobian is then triangular in that order, so
    :math:`\log|\det J| = \sum_i \log g'(x_i; \theta_i)`.

    The order is the conditioner's ``order`` attribute when it has one (:class:`~flowkit.nn.MADE`
    does): an integer tensor that broadcasts against the event shape, each element's parameters
    depending only on elements of smaller order. Without one it is the position along the first
    event axis, which suits sequences of shape ``(T, d)``: position :math:`t`'s parameters depend
    on positions before :math:`t` (a causal transformer, say), the ``d`` entries of a position are
    transformed together.

    ``forward`` (data to latent, the density direction) costs one conditioner pass. ``inverse`` is
    sequential: pass :math:`k` computes :math:`\theta` from the elements already recovered (the
    others held at zero, so no stray value can overflow) and recovers those of order :math:`k`;
    after as many passes as there are orders (``D`` for a MADE, ``T`` for a sequence) every
    :math:`\theta_i` is exact and so is :math:`x`.

    **Incremental decoding.** A sequence conditioner may offer
    ``incremental_decoder(context, N)``: a step function that, called with None and then with each
    decoded position :math:`x_t` ``(N, d)`` in turn, returns the raw parameters ``(N, P * d)`` of
    the next position (:class:`~flowkit.nn.CausalTransformer` does, with a key/value cache). The
    inverse then does one position's work per step instead of a pass over the whole sequence,
    with the same result up to round-off. The attribute ``incremental`` (True) switches it off
    for comparison.

    The conditioner's output has the event shape except for the last axis, which holds the ``P``
    parameters of each of its elements next to each other (``P * d`` entries; entry ``j * P + p``
    is parameter ``p`` of element ``j``). It receives the context as a second argument if its
    ``forward`` has a parameter named ``context``.

    Args:
        conditioner: Network with the autoregressive property, as above.
        transform: The elementwise map :math:`g`, e.g. :class:`~flowkit.bijectors.AffineMap`.
        event_shape: ``(D,)`` for vectors or ``(T, d)`` for sequences.

    Shapes:
        ``x``: ``(*batch, *event_shape)``; ``context`` as the conditioner takes it; ``z`` like
        ``x``; ``log_abs_det``: ``(*batch,)``.

    References:
        Germain, Gregor, Murray & Larochelle, MADE (2015); Papamakarios, Pavlakou & Murray,
        Masked Autoregressive Flow for Density Estimation (2017).

    Example:
        >>> from flowkit.bijectors import SplineMap
        >>> from flowkit.nn import MADE
        >>> flow = Autoregressive(MADE(3, 11, (16,)), SplineMap(bins=4), (3,))
        >>> z, log_abs_det = flow(torch.randn(8, 3))
        >>> bool(torch.allclose(flow.inverse(z)[0], z))  # identity at initialisation
        True
    """

    sequence_order: Tensor

    def __init__(
        self, conditioner: nn.Module, transform: ElementwiseMap, event_shape: Sequence[int]
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_conditioner_and_map(owner, conditioner, transform)
        event_shape = tuple(int(s) for s in event_shape)
        if len(event_shape) not in (1, 2) or min(event_shape) < 1:
            raise ValueError(
                f"{owner} expects an event shape (D,) or (T, d) of positive sizes, "
                f"got {event_shape}"
            )
        # Registration order fixes the parameters' order, which optimizer checkpoints rely on.
        self.conditioner = conditioner
        self.transform = transform
        self.event_shape = event_shape
        self.event_rank = len(event_shape)
        self.pass_context = accepts_context(conditioner)
        positions = torch.arange(event_shape[0]).reshape((-1,) + (1,) * (self.event_rank - 1))
        # Not state: derived from the event shape (the conditioner's own order is saved with it).
        self.register_buffer("sequence_order", positions, persistent=False)
        order = self._order()
        try:
            torch.broadcast_shapes(order.shape, event_shape)
        except RuntimeError:
            raise ValueError(
                f"{owner} expects the conditioner's order to broadcast against the event shape "
                f"{event_shape}, got shape {tuple(order.shape)}"
            ) from None
        self.passes = int(order.max()) + 1
        self.incremental = True
        flatten_state_of(self, ("transform",))

    def _order(self) -> Tensor:
        order = getattr(self.conditioner, "order", None)
        return self.sequence_order if order is None else order

    def _params(self, x: Tensor, context: Tensor | None) -> Params:
        raw = call_network(self.conditioner, x, self.event_rank, context, self.pass_context)
        count = self.transform.params_per_element
        expected = x.shape[:-1] + (count * x.shape[-1],)
        if raw.shape != expected:
            raise ValueError(
                f"{type(self).__name__}: the conditioner must return shape {tuple(expected)} "
                f"({count} parameters per element), got {tuple(raw.shape)}"
            )
        return self.transform.unpack(raw.unflatten(-1, (-1, count)), raw.dim())

    def _check(self, value: Tensor, what: str) -> None:
        check_dtype(type(self).__name__, value, what)
        check_event_shape(type(self).__name__, value, self.event_shape, what)

    def _log_abs_det(self, log_derivative: Tensor | None, x: Tensor) -> Tensor:
        batch_rank = x.dim() - self.event_rank
        if log_derivative is None:
            return x.new_zeros(x.shape[:batch_rank])
        return log_derivative.sum(dim=tuple(range(batch_rank, x.dim())))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` to ``z`` in one pass; return ``(z, log_abs_det)``."""
        self._check(x, "input")
        z, log_derivative = self.transform(x, self._params(x, context))
        return z, self._log_abs_det(log_derivative, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Invert in ``passes`` conditioner passes, one per step of the order."""
        self._check(z, "latent")
        if self.incremental and self._decodes_incrementally():
            return self._inverse_incremental(z, context)
        order = self._order()
        x = torch.zeros_like(z)
        for step in range(self.passes):
            x, log_derivative = self.transform.inverse(z, self._params(x, context))
            if step < self.passes - 1:
                x = x.masked_fill(order > step, 0.0)
        return x, self._log_abs_det(log_derivative, z)

    def _decodes_incrementally(self) -> bool:
        return (
            self.event_rank == 2
            and getattr(self.conditioner, "order", None) is None
            and callable(getattr(self.conditioner, "incremental_decoder", None))
        )

    def _inverse_incremental(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Invert position by position with the conditioner's incremental decoder."""
        batch_shape = z.shape[:-2]
        flat = z.reshape((-1,) + self.event_shape)
        flat_context = None
        if self.pass_context and context is not None:
            context = context.expand(batch_shape + context.shape[len(batch_shape) :])
            flat_context = context.reshape((-1,) + context.shape[len(batch_shape) :])
        start: Callable[[Tensor | None, int], Callable[[Tensor | None], Tensor]]
        start = self.conditioner.incremental_decoder  # type: ignore[assignment]
        decode = start(flat_context, flat.shape[0])
        count = self.transform.params_per_element
        positions: list[Tensor] = []
        log_derivatives: list[Tensor | None] = []
        previous = None
        for t in range(self.event_shape[0]):
            raw = decode(previous)
            params = self.transform.unpack(raw.unflatten(-1, (-1, count)), raw.dim())
            previous, log_derivative = self.transform.inverse(flat[:, t], params)
            positions.append(previous)
            log_derivatives.append(log_derivative)
        x = torch.stack(positions, 1).reshape(z.shape)
        if any(value is None for value in log_derivatives):
            return x, self._log_abs_det(None, z)
        stacked = torch.stack([value for value in log_derivatives if value is not None], 1)
        return x, self._log_abs_det(stacked.reshape(z.shape), z)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event shape."""
        check_event_shape(type(self).__name__, shape, self.event_shape)
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the latent's event shape."""
        check_event_shape(type(self).__name__, shape, self.event_shape, "latent")
        return torch.Size(shape)

    def extra_repr(self) -> str:
        """The event shape, for ``repr``."""
        return f"event_shape={self.event_shape}"


def _made_conditioner(
    features: int,
    params_per_feature: int,
    *,
    context_features: int | None,
    hidden_features: Sequence[int],
    residual: bool,
    order: Order,
    activation: type[nn.Module],
    identity_init: bool,
) -> MADE:
    """The MADE of the constructors that take MADE options (MAF, IAF, spline autoregressive)."""
    return MADE(
        features,
        params_per_feature,
        hidden_features,
        context_features=context_features,
        residual=residual,
        order=order,
        activation=activation,
        zero_init=identity_init,
    )


class MaskedAffineAutoregressive(Autoregressive):
    r"""Masked autoregressive flow step (MAF): :math:`z_i = x_i \, s_i(x_{<i}, c) + t_i(x_{<i}, c)`.

    This is Papamakarios et al.'s :math:`z_i = (x_i - \mu_i) e^{-\alpha_i}` with
    :math:`s_i = e^{-\alpha_i}` and :math:`t_i = -\mu_i e^{-\alpha_i}`: an :class:`Autoregressive`
    with a :class:`~flowkit.nn.MADE` conditioner and an :class:`~flowkit.bijectors.AffineMap`. The
    raw scale :math:`h_i` becomes :math:`\log s_i` through ``scale_fn``: ``"softplus"`` (the
    default, :math:`s = 1` at :math:`h = 0` and linear growth), ``"exp"``, ``"sigmoid"`` (Glow's
    :math:`\sigma(h + 2)`) or a callable :math:`h \mapsto \log s`. The MADE outputs
    :math:`(t_i, h_i)` interleaved (``theta[..., 0::2]`` shifts, ``theta[..., 1::2]`` raw scales)
    and starts at zero, so the step starts as the identity for ``"softplus"`` and ``"exp"``.

    :math:`\log|\det J| = \sum_i \log s_i`. ``forward`` (density) is one pass; ``inverse``
    (sampling), :math:`x_i = (z_i - t_i) / s_i`, takes ``D`` passes. For fast sampling use
    :class:`InverseAutoregressive`.

    Args:
        features: Number of features ``D``.
        context_features: Features of the context, or None.
        hidden_features: Widths of the MADE's hidden layers.
        residual: Use residual blocks in the MADE.
        order: Autoregressive order: ``"natural"``, ``"reversed"`` or the position of each feature.
        scale_fn: How the raw scale becomes a log-scale.
        activation: Module class for the MADE's hidden activations.
        identity_init: Start as the identity (the MADE's output layer at zero); False keeps the
            output layer's default random initialisation.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density Estimation (2017).

    Example:
        >>> maf = MaskedAffineAutoregressive(3, context_features=2, hidden_features=(16, 16))
        >>> z, log_abs_det = maf(torch.randn(8, 3), torch.randn(8, 2))
        >>> z.shape, log_abs_det.shape
        (torch.Size([8, 3]), torch.Size([8]))
    """

    transform: AffineMap

    def __init__(
        self,
        features: int,
        *,
        context_features: int | None = None,
        hidden_features: Sequence[int] = (64, 64),
        residual: bool = False,
        order: Order = "natural",
        scale_fn: ScaleFunction = "softplus",
        activation: type[nn.Module] = nn.ReLU,
        identity_init: bool = True,
    ) -> None:
        made = _made_conditioner(
            features,
            2,
            context_features=context_features,
            hidden_features=hidden_features,
            residual=residual,
            order=order,
            activation=activation,
            identity_init=identity_init,
        )
        super().__init__(made, AffineMap(scale_fn), (features,))
        self.features = int(features)
        self.context_features = context_features

    def extra_repr(self) -> str:
        """Features, context features and scale function, for ``repr``."""
        return (
            f"features={self.features}, context_features={self.context_features}, "
            f"scale_fn={self.transform.scale_fn_name!r}"
        )


class InverseAutoregressive(Inverse):
    r"""Inverse autoregressive flow step (IAF): MAF run backwards, for one-pass sampling.

    This is ``Inverse(MaskedAffineAutoregressive(...))``: the generative direction (latent to data,
    ``inverse``) is :math:`x_i = z_i \, s_i(z_{<i}, c) + t_i(z_{<i}, c)`, one network pass; the
    density direction (``forward``) recovers :math:`z` from :math:`x` in ``D`` sequential passes.
    Use it where sampling (or variational inference on its own samples) dominates; use
    :class:`MaskedAffineAutoregressive` where density evaluation does.

    :math:`\log|\det \partial z / \partial x| = -\sum_i \log s_i(z_{<i}, c)`.

    Args:
        features: Number of features ``D``.
        context_features: Features of the context, or None.
        hidden_features: Widths of the MADE's hidden layers.
        residual: Use residual blocks in the MADE.
        order: Autoregressive order of the latent features.
        scale_fn: How the raw scale becomes a log-scale.
        activation: Module class for the MADE's hidden activations.
        identity_init: Start as the identity (the MADE's output layer at zero).

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, Improved Variational Inference
        with Inverse Autoregressive Flow (2016).

    Example:
        >>> iaf = InverseAutoregressive(3, hidden_features=(16, 16))
        >>> x, log_abs_det = iaf.inverse(torch.randn(8, 3))
        >>> x.shape
        torch.Size([8, 3])
    """

    bijector: MaskedAffineAutoregressive

    def __init__(
        self,
        features: int,
        *,
        context_features: int | None = None,
        hidden_features: Sequence[int] = (64, 64),
        residual: bool = False,
        order: Order = "natural",
        scale_fn: ScaleFunction = "softplus",
        activation: type[nn.Module] = nn.ReLU,
        identity_init: bool = True,
    ) -> None:
        super().__init__(
            MaskedAffineAutoregressive(
                features,
                context_features=context_features,
                hidden_features=hidden_features,
                residual=residual,
                order=order,
                scale_fn=scale_fn,
                activation=activation,
                identity_init=identity_init,
            )
        )
