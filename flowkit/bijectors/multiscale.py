"""Multi-scale architecture: FactorOut (split with a learned conditional prior) and Standardize."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._checks import accepts_context
from flowkit._tensors import check_event_shape, reduce_to_batch
from flowkit.bijectors._conditioners import call_network, every_nth
from flowkit.bijectors.base import Bijector, Compose, Shape
from flowkit.bijectors.precision import as_dtype_of
from flowkit.bijectors.reshape import Reshape

__all__ = ["FactorOut", "Standardize", "latent_shapes"]


def _gaussian_standardize(
    z: Tensor, params: Tensor, event_rank: int
) -> tuple[Tensor, Tensor, Tensor]:
    dim = params.dim() - event_rank
    mean, log_scale = every_nth(params, dim, 0, 2), every_nth(params, dim, 1, 2)
    return mean, log_scale, (z - mean) * torch.exp(-log_scale)


def _check_params(name: str, params: Tensor, channels: int, event_rank: int) -> None:
    dim = params.dim() - event_rank
    if dim < 0 or params.shape[dim] != 2 * channels:
        raise ValueError(
            f"{name}: the prior network must return 2 * {channels} = {2 * channels} channels "
            f"(mean and log-scale interleaved) with event rank {event_rank}, "
            f"got shape {tuple(params.shape)}"
        )


class FactorOut(Bijector):
    r"""Multi-scale split: factor half the channels out under a learned conditional Gaussian.

    The input :math:`x` of event shape ``(C, *spatial)`` splits along channels into the kept part
    :math:`h` (the first ``kept_channels``) and the factored part :math:`z`. A prior network gives
    :math:`(\mu, \log\sigma) = \mathrm{NN}(h)` and :math:`z` is standardised,
    :math:`\epsilon = (z - \mu) e^{-\log\sigma}`, so that :math:`z \sim N(\mu, \sigma^2)` becomes
    :math:`\epsilon \sim N(0, I)` with :math:`\log|\det J| = -\sum \log\sigma`. The kept part runs
    through ``inner`` (the rest of the model), and both results are flattened into one latent vector
    ``[epsilon, inner(h)]``. The whole multi-scale model is therefore one bijector whose base is
    :math:`N(0, I)`; :func:`latent_shapes` and ``Flow.unflatten`` give the per-level tensors back.

    With ``prior=None`` the factored part is passed through unchanged (RealNVP's factoring out,
    under a standard normal).

    Args:
        event_shape: Event shape ``(C, *spatial)`` of the input.
        inner: Bijector applied to the kept part.
        prior: Network mapping ``h`` (and the context, if its forward takes one) to
            ``2 * (C - kept_channels)`` channels, mean and log-scale interleaved (``[:, 0::2]`` is
            the mean), as Glow's official ``split2d_prior``; None for a standard normal.
        kept_channels: Channels kept; ``C // 2`` by default.

    Shapes:
        ``x``: ``(*batch, C, *spatial)``; ``z``: ``(*batch, D)`` with ``D`` the number of elements
        of the event; ``log_abs_det``: ``(*batch,)``.

    References:
        Dinh, Sohl-Dickstein & Bengio, Real NVP (2017), 3.6; Kingma & Dhariwal, Glow (2018).
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        inner: Bijector,
        prior: nn.Module | None = None,
        *,
        kept_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        if not self.event_shape:
            raise ValueError("FactorOut expects an event shape with at least one dimension")
        channels = self.event_shape[0]
        self.kept_channels = channels // 2 if kept_channels is None else int(kept_channels)
        if not 0 < self.kept_channels < channels:
            raise ValueError(
                f"FactorOut expects 0 < kept_channels < {channels}, got {self.kept_channels}"
            )
        if not isinstance(inner, Bijector):
            raise TypeError(f"FactorOut expects a Bijector as inner, got {type(inner).__name__}")
        self.event_rank = len(self.event_shape)
        self.kept_shape = (self.kept_channels,) + self.event_shape[1:]
        self.factored_shape = (channels - self.kept_channels,) + self.event_shape[1:]
        if inner.event_rank > len(self.kept_shape):
            raise ValueError(
                f"FactorOut: inner bijector has event rank {inner.event_rank}, more than the kept "
                f"part's {len(self.kept_shape)}"
            )
        self.inner_latent_shape = tuple(inner.forward_shape(self.kept_shape))
        self.inner = inner
        self.prior = prior
        self.pass_context = prior is not None and accepts_context(prior)
        self.factored_size = math.prod(self.factored_shape)
        self.latent_size = self.factored_size + math.prod(self.inner_latent_shape)

    @property
    def latent_rank(self) -> int:
        """The latent is a flat vector of both parts."""
        return 1

    def _prior_params(self, prior: nn.Module, h: Tensor, context: Tensor | None) -> Tensor:
        params = call_network(prior, h, self.event_rank, context, self.pass_context)
        _check_params("FactorOut", params, self.factored_shape[0], self.event_rank)
        return params

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Standardise the factored part, map the kept part by ``inner``; return the flat latent."""
        check_event_shape("FactorOut", x, self.event_shape)
        batch_rank = x.dim() - self.event_rank
        h = x.narrow(batch_rank, 0, self.kept_channels)
        z = x.narrow(batch_rank, self.kept_channels, self.factored_shape[0])
        if self.prior is not None:
            _, log_scale, eps = _gaussian_standardize(
                z, self._prior_params(self.prior, h, context), self.event_rank
            )
            log_abs_det = -log_scale.expand_as(z).flatten(batch_rank).sum(-1)
        else:
            eps, log_abs_det = z, x.new_zeros(x.shape[:batch_rank])
        inner_z, inner_log_abs_det = self.inner(h, context)
        log_abs_det = log_abs_det + reduce_to_batch(inner_log_abs_det, batch_rank)
        latent = torch.cat([eps.flatten(batch_rank), inner_z.flatten(batch_rank)], dim=-1)
        return latent, log_abs_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Invert ``inner`` on the kept part, then undo the factored part's standardisation."""
        check_event_shape("FactorOut", z, (self.latent_size,), "latent")
        batch_shape = z.shape[:-1]
        batch_rank = len(batch_shape)
        eps = z[..., : self.factored_size].reshape(batch_shape + self.factored_shape)
        inner_z = z[..., self.factored_size :].reshape(batch_shape + self.inner_latent_shape)
        h, log_abs_det = self.inner.inverse(inner_z, context)
        log_abs_det = reduce_to_batch(log_abs_det, batch_rank)
        if self.prior is not None:
            params = self._prior_params(self.prior, h, context)
            dim = params.dim() - self.event_rank
            mean, log_scale = every_nth(params, dim, 0, 2), every_nth(params, dim, 1, 2)
            factored = eps * log_scale.exp() + mean
            log_abs_det = log_abs_det + log_scale.expand_as(eps).flatten(batch_rank).sum(-1)
        else:
            factored = eps
        return torch.cat([h, factored], dim=batch_rank), log_abs_det

    def forward_shape(self, shape: Shape) -> torch.Size:
        """Batch shape followed by the flat latent size."""
        check_event_shape("FactorOut", shape, self.event_shape)
        return torch.Size(tuple(shape)[: len(shape) - self.event_rank] + (self.latent_size,))

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """Batch shape followed by the event shape."""
        check_event_shape("FactorOut", shape, (self.latent_size,), "latent")
        return torch.Size(tuple(shape)[:-1] + self.event_shape)

    def extra_repr(self) -> str:
        """Event shape and kept channels, for ``repr``."""
        return f"event_shape={self.event_shape}, kept_channels={self.kept_channels}"


class Standardize(Bijector):
    r"""Standardise under a learned (conditional) diagonal Gaussian.

    :math:`z = (x - \mu) e^{-\log\sigma}`. This moves a learned prior :math:`N(\mu, \sigma^2)` into
    the bijector, leaving :math:`N(0, I)` as the base, e.g. Glow's learned top prior
    (``learn_top``), optionally class-conditional. :math:`(\mu, \log\sigma)` come from
    ``prior(context)`` if its forward takes a context, or ``prior()`` otherwise, as ``2 * C``
    channels interleaved (``[:, 0::2]`` the mean) that broadcast against the event.
    :math:`\log|\det J| = -\sum \log\sigma`.

    Args:
        prior: Module returning the parameters (see :class:`flowkit.nn.GlowTopPrior`).
        channels: Number of channels ``C`` (the first event dimension).
        event_rank: 3 for images, 1 for vectors.
    """

    def __init__(self, prior: nn.Module, channels: int, *, event_rank: int = 3) -> None:
        super().__init__()
        self.prior = prior
        self.channels = int(channels)
        self.event_rank = int(event_rank)
        self.pass_context = accepts_context(prior)

    def _pattern(self) -> tuple[int | None, ...]:
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def _params(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        params = as_dtype_of(self.prior(context) if self.pass_context else self.prior(), like)
        _check_params("Standardize", params, self.channels, self.event_rank)
        dim = params.dim() - self.event_rank
        return every_nth(params, dim, 0, 2), every_nth(params, dim, 1, 2)

    def _log_abs_det(self, log_scale: Tensor, x: Tensor) -> Tensor:
        batch_rank = x.dim() - self.event_rank
        return log_scale.expand_as(x).flatten(batch_rank).sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Standardise: :math:`z = (x - \mu) e^{-\log\sigma}`; return ``(z, log_abs_det)``."""
        check_event_shape("Standardize", x, self._pattern())
        mean, log_scale = self._params(context, x)
        return (x - mean) * torch.exp(-log_scale), -self._log_abs_det(log_scale, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Un-standardise: :math:`x = z e^{\log\sigma} + \mu`; return ``(x, log_abs_det)``."""
        check_event_shape("Standardize", z, self._pattern(), "latent")
        mean, log_scale = self._params(context, z)
        return z * log_scale.exp() + mean, self._log_abs_det(log_scale, z)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the channel count."""
        check_event_shape("Standardize", shape, self._pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        """Channels and event rank, for ``repr``."""
        return f"{self.channels}, event_rank={self.event_rank}"


def latent_shapes(bijector: Bijector, event_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Event shapes of the pieces that make up ``bijector``'s latent for an input ``event_shape``.

    For a multi-scale model (nested :class:`FactorOut`) these are the factored-out shapes, level by
    level, then the top; a trailing :class:`Reshape`/:class:`Flatten` reports the shape it
    flattened. Any other bijector is one piece, its output shape.
    """
    event_shape = tuple(event_shape)
    if isinstance(bijector, FactorOut):
        return [bijector.factored_shape] + latent_shapes(bijector.inner, bijector.kept_shape)
    if isinstance(bijector, Reshape):
        return [bijector.in_shape]
    if isinstance(bijector, Compose) and len(bijector):
        shape: tuple[int, ...] = event_shape
        for part in list(bijector)[:-1]:
            shape = tuple(part.forward_shape(shape))
        return latent_shapes(bijector[-1], shape)
    return [tuple(bijector.forward_shape(event_shape))]
