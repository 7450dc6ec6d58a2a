"""Adapters between flowkit bijectors and ``torch.distributions`` transforms, both ways."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.transforms import (
    ComposeTransform,
    IndependentTransform,
    Transform,
    _InverseTransform,
)

from flowkit._tensors import check_dtype, check_event_shape
from flowkit.bijectors._domains import check_support
from flowkit.bijectors.base import Bijector, Shape

__all__ = ["BijectorTransform", "TransformBijector", "from_transform"]


def _with_event_rank(constraint: constraints.Constraint, rank: int) -> constraints.Constraint:
    missing = rank - constraint.event_dim
    if missing > 0:
        return constraints.independent(constraint, missing)
    return constraint


class BijectorTransform(Transform):
    """A flowkit bijector's forward map (data to latent) as a ``torch.distributions.Transform``.

    It follows PyTorch's transform contract: ``t.inv.inv is t``, results cached for the last input
    when ``cache_size == 1``, ``log_abs_det_jacobian(x, y)`` with the batch shape of ``x`` over the
    domain's event dimensions, ``forward_shape``/``inverse_shape``, ``domain``/``codomain`` with the
    bijector's event ranks, and ``sign`` for elementwise monotone bijectors. The log-determinant is
    computed together with the value, so ``TransformedDistribution.log_prob`` runs the bijector
    once.

    Args:
        bijector: The bijector to expose.
        context: Fixed conditioning input passed to every call.
        cache_size: 0 or 1, as for every torch transform.

    Example:
        >>> from torch.distributions import Normal, TransformedDistribution
        >>> from flowkit.bijectors import Sigmoid
        >>> logit_normal = TransformedDistribution(Normal(0.0, 1.0), Sigmoid().as_transform().inv)
    """

    bijective = True

    def __init__(
        self, bijector: Bijector, context: Tensor | None = None, cache_size: int = 1
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.bijector = bijector
        self.context = context
        self._last: tuple[Tensor, Tensor, Tensor] | None = None

    # The base class declares domain and codomain as attributes, and mypy rejects
    # read-only properties in their place.
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        """The bijector's domain, reinterpreted over its event rank."""
        return _with_event_rank(self.bijector.domain, self.bijector.event_rank)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        """The bijector's codomain, reinterpreted over its latent rank."""
        return _with_event_rank(self.bijector.codomain, self.bijector.latent_rank)

    @property
    def sign(self) -> int:
        """Sign of the derivative; NotImplementedError unless the bijector is elementwise."""
        if self.bijector.event_rank != 0 or not hasattr(self.bijector, "sign"):
            raise NotImplementedError(
                f"sign is defined only for elementwise monotone bijectors, not "
                f"{type(self.bijector).__name__}"
            )
        # Elementwise bijectors declare their sign as an int class attribute.
        return cast(int, self.bijector.sign)

    def with_cache(self, cache_size: int = 1) -> BijectorTransform:
        """This transform with another cache size (itself if the size is the same)."""
        if cache_size == self._cache_size:
            return self
        return BijectorTransform(self.bijector, self.context, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BijectorTransform)
            and other.bijector is self.bijector
            and other.context is self.context
        )

    def __hash__(self) -> int:
        return hash((id(self.bijector), id(self.context)))

    def _call(self, x: Tensor) -> Tensor:
        y, log_abs_det = self.bijector(x, self.context)
        if self._cache_size:
            self._last = (x, y, log_abs_det)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        x, log_abs_det = self.bijector.inverse(y, self.context)
        if self._cache_size:
            self._last = (x, y, -log_abs_det)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """Log-determinant at ``x``, reused from the last call when ``(x, y)`` match it."""
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            return last[2]
        _, log_abs_det = self.bijector(x, self.context)
        return log_abs_det

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The bijector's ``forward_shape``."""
        return self.bijector.forward_shape(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The bijector's ``inverse_shape``."""
        return self.bijector.inverse_shape(shape)

    def __repr__(self) -> str:
        return f"BijectorTransform({type(self.bijector).__name__})"


class TransformBijector(Bijector):
    """A ``torch.distributions.Transform`` used as a flowkit bijector.

    The transform's direction becomes ``forward`` (data to latent). Event ranks, shapes, domain and
    codomain come from the transform; the log-determinant is the transform's
    ``log_abs_det_jacobian``. Tensors held by the transform are not registered as module parameters.

    Args:
        transform: Any bijective torch transform, ``ComposeTransform`` included.
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                "from_transform expects a torch.distributions.Transform, got "
                f"{type(transform).__name__}"
            )
        if not transform.bijective:
            raise ValueError(f"from_transform expects a bijective transform, got {transform!r}")
        self.transform = transform
        self.event_rank = transform.domain.event_dim

    @property
    def latent_rank(self) -> int:
        """Event rank of the transform's codomain."""
        return self.transform.codomain.event_dim

    # The base class declares domain and codomain as attributes, and mypy rejects
    # read-only properties in their place.
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        """The transform's domain."""
        return self.transform.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        """The transform's codomain."""
        return self.transform.codomain

    @property
    def sign(self) -> int:
        """Sign of the transform's derivative (elementwise transforms only)."""
        return self.transform.sign

    def _owner(self) -> str:
        return f"from_transform({type(self.transform).__name__})"

    def _check(self, value: Tensor, inverse: bool) -> None:
        """Shape (always) and domain or codomain (while validation is on) of ``value``."""
        owner, what = self._owner(), "latent" if inverse else "input"
        check_dtype(owner, value, what)
        event = getattr(self.transform, "out_shape" if inverse else "in_shape", None)
        if event is not None:
            # ReshapeTransform knows its event shapes: name them rather than torch's view error.
            check_event_shape(owner, value, tuple(event), what)
        rank = self.latent_rank if inverse else self.event_rank
        if value.dim() < rank:
            raise ValueError(
                f"{owner} expects {what} with at least {rank} dims (its event rank), got shape "
                f"{tuple(value.shape)}"
            )
        try:
            if inverse:
                self.transform.inverse_shape(value.shape)
            else:
                self.transform.forward_shape(value.shape)
        except ValueError as error:
            raise ValueError(
                f"{owner} cannot take {what} of shape {tuple(value.shape)}: {error}"
            ) from None
        check_support(owner, value, self.codomain if inverse else self.domain, what)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the transform; return ``(z, log_abs_det)`` summed over the event."""
        self._check(x, inverse=False)
        y = self.transform(x)
        return y, self._log_abs_det(x, y, self.event_rank)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the transform's inverse; return ``(x, log_abs_det)`` of that inverse."""
        self._check(z, inverse=True)
        x = self.transform.inv(z)
        return x, -self._log_abs_det(x, z, self.event_rank)

    def _log_abs_det(self, x: Tensor, y: Tensor, rank: int) -> Tensor:
        log_abs_det = self.transform.log_abs_det_jacobian(x, y)
        batch_shape = x.shape[: x.dim() - rank]
        # Some transforms return a log-det that broadcasts against the batch (a scalar for a fixed
        # linear map); flowkit's contract is an explicit batch-shaped tensor.
        return log_abs_det.expand(batch_shape) if log_abs_det.shape != batch_shape else log_abs_det

    def __getstate__(self) -> dict:
        # A torch inverse transform loses the link to its base when pickled or deep-copied (torch
        # drops ``_inv``, a weak reference for every other transform), so store a portable form.
        state = self.__dict__.copy()
        state["transform"] = _portable(self.transform)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["transform"] = _rebuild(state["transform"])
        super().__setstate__(state)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The transform's ``forward_shape``."""
        return torch.Size(self.transform.forward_shape(shape))

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The transform's ``inverse_shape``."""
        return torch.Size(self.transform.inverse_shape(shape))

    def as_transform(self, context: Tensor | None = None, cache_size: int = 1) -> Transform:
        """The wrapped transform itself, with the requested cache size."""
        return self.transform.with_cache(cache_size)


def _portable(transform: Transform) -> tuple:
    """``transform`` as nested tuples in which inverses survive pickling (see ``_rebuild``)."""
    if isinstance(transform, _InverseTransform):
        return ("inverse", _portable(transform.inv))
    if isinstance(transform, ComposeTransform):
        return ("compose", [_portable(part) for part in transform.parts], transform._cache_size)
    if isinstance(transform, IndependentTransform):
        return (
            "independent",
            _portable(transform.base_transform),
            transform.reinterpreted_batch_ndims,
            transform._cache_size,
        )
    return ("leaf", transform)


def _rebuild(portable: tuple) -> Transform:
    kind = portable[0]
    if kind == "inverse":
        return _rebuild(portable[1]).inv
    if kind == "compose":
        return ComposeTransform([_rebuild(part) for part in portable[1]], cache_size=portable[2])
    if kind == "independent":
        return IndependentTransform(_rebuild(portable[1]), portable[2], cache_size=portable[3])
    return portable[1]


def from_transform(transform: Transform) -> Bijector:
    """Wrap a ``torch.distributions.Transform`` as a flowkit :class:`Bijector`.

    A transform made by :meth:`Bijector.as_transform` without context gives its bijector back.

    Example:
        >>> from torch.distributions.transforms import ExpTransform
        >>> bijector = from_transform(ExpTransform())
        >>> z, log_abs_det = bijector(torch.zeros(3))
    """
    if isinstance(transform, BijectorTransform) and transform.context is None:
        return transform.bijector
    return TransformBijector(transform)
