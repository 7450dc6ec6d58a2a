"""Autoregressive bijectors on vectors: the MADE-based base class, MAF and IAF."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._utils import check_dtype, check_event_shape
from flowkit.bijectors.base import Bijector, Inverse, Shape
from flowkit.bijectors.coupling import ScaleFunction, resolve_scale_fn
from flowkit.nn.made import MADE, Order

__all__ = ["Autoregressive", "InverseAutoregressive", "MaskedAffineAutoregressive"]


class Autoregressive(Bijector):
    r"""Base of autoregressive bijectors: :math:`z_i = g(x_i; \theta_i(x_{<i}, c))` with a MADE.

    Feature :math:`i` is mapped by an invertible scalar map :math:`g` whose parameters
    :math:`\theta_i` depend only on the features before it in the order :math:`\pi` (``order``) and
    on the context :math:`c`. The Jacobian is triangular in that order, so
    :math:`\log|\det J| = \sum_i \log g'(x_i; \theta_i)`.

    ``forward`` (data to latent, the density direction) costs one network pass. ``inverse`` is
    sequential: pass :math:`k` computes :math:`\theta` from the features already recovered (the
    others held at zero, so no stray value can overflow) and recovers the :math:`k`-th feature in
    the order; after :math:`D` passes every :math:`\theta_i` is exact and so is :math:`x`.

    Subclasses implement ``_transform(x, theta)`` and ``_untransform(z, theta)`` on
    ``theta`` of shape ``(*batch, D, P)`` (the network's interleaved output, feature by feature),
    each returning the output and the elementwise log-derivative of the map it applies.

    Args:
        features: Number of features ``D`` of the vector event.
        params_per_feature: Number ``P`` of parameters of :math:`g` per feature.
        context_features: Features of the context, or None for an unconditional bijector.
        hidden_features: Widths of the MADE's hidden layers.
        residual: Use residual blocks in the MADE.
        order: Autoregressive order; see :func:`flowkit.nn.made.autoregressive_order`.
        activation: Module class for the MADE's hidden activations.
        identity_init: Start the MADE's output layer at zero (``zero_init``), so that a subclass
            whose map is the identity at zero parameters starts as the identity; with False the
            output layer keeps PyTorch's default random initialisation.

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, context_features)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.
    """

    event_rank = 1

    def __init__(
        self,
        features: int,
        params_per_feature: int,
        *,
        context_features: int | None = None,
        hidden_features: Sequence[int] = (64, 64),
        residual: bool = False,
        order: Order = "natural",
        activation: type[nn.Module] = nn.ReLU,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.context_features = context_features
        self.conditioner = MADE(
            features,
            params_per_feature,
            hidden_features,
            context_features=context_features,
            residual=residual,
            order=order,
            activation=activation,
            zero_init=identity_init,
        )

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.conditioner(x, context).unflatten(-1, (self.features, -1))

    def _check(self, value: Tensor, what: str) -> None:
        check_dtype(type(self).__name__, value, what)
        check_event_shape(type(self).__name__, value, (self.features,), what)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, "input")
        z, log_derivative = self._transform(x, self._params(x, context))
        return z, log_derivative.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z, "latent")
        order = self.conditioner.order
        x = torch.zeros_like(z)
        for position in range(self.features):
            x, log_derivative = self._untransform(z, self._params(x, context))
            if position < self.features - 1:
                x = x.masked_fill(order > position, 0.0)
        return x, log_derivative.sum(-1)

    def forward_shape(self, shape: Shape) -> torch.Size:
        check_event_shape(type(self).__name__, shape, (self.features,))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        check_event_shape(type(self).__name__, shape, (self.features,), "latent")
        return torch.Size(shape)

    def _transform(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _untransform(self, z: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"features={self.features}, context_features={self.context_features}"


class MaskedAffineAutoregressive(Autoregressive):
    r"""Masked autoregressive flow step (MAF): :math:`z_i = x_i \, s_i(x_{<i}, c) + t_i(x_{<i}, c)`.

    This is Papamakarios et al.'s :math:`z_i = (x_i - \mu_i) e^{-\alpha_i}` with
    :math:`s_i = e^{-\alpha_i}` and :math:`t_i = -\mu_i e^{-\alpha_i}`; the raw scale :math:`h_i`
    becomes :math:`\log s_i` through ``scale_fn`` (as in
    :class:`~flowkit.bijectors.AffineCoupling`): ``"softplus"`` (the default, :math:`s = 1` at
    :math:`h = 0` and linear growth), ``"exp"``, ``"sigmoid"`` (Glow's :math:`\sigma(h + 2)`) or a
    callable :math:`h \mapsto \log s`. The MADE outputs :math:`(t_i, h_i)` interleaved
    (``theta[..., 0::2]`` shifts, ``theta[..., 1::2]`` raw scales) and starts at zero, so the
    step starts as the identity for ``"softplus"`` and ``"exp"``.

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
            features,
            2,
            context_features=context_features,
            hidden_features=hidden_features,
            residual=residual,
            order=order,
            activation=activation,
            identity_init=identity_init,
        )
        self.scale_fn_name, self.log_scale_fn = resolve_scale_fn(
            scale_fn, "MaskedAffineAutoregressive"
        )

    def _transform(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        log_scale = self.log_scale_fn(theta[..., 1])
        return x * log_scale.exp() + theta[..., 0], log_scale

    def _untransform(self, z: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        log_scale = self.log_scale_fn(theta[..., 1])
        return (z - theta[..., 0]) * torch.exp(-log_scale), -log_scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_fn={self.scale_fn_name!r}"


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
