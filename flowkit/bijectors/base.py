"""The Bijector contract, composition and inversion."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Union, cast

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from flowkit._tensors import is_compiling, reduce_to_batch

__all__ = ["Bijector", "Compose", "Inverse", "InverseNotAvailable"]

Shape = Union[torch.Size, Sequence[int]]
Rebuilt = tuple[Tensor, tuple[Tensor, ...], Tensor, Tensor, Callable[[Sequence[Tensor]], Tensor]]


def _first(gradients: Sequence[Tensor]) -> Tensor:
    return gradients[0]


class InverseNotAvailable(NotImplementedError):
    """Raised by :meth:`Bijector.inverse` of a bijector whose inverse has no closed form."""


class Bijector(nn.Module):
    r"""An invertible, differentiable map from data :math:`x` to latent :math:`z = f(x)`.

    ``forward`` is the normalizing direction (data to latent, as in nflows and the Glow paper);
    ``inverse`` is the generative one. Both return the transformed tensor and
    :math:`\log |\det J|` of the map they apply, so that ``inverse``'s log-determinant is minus the
    forward one at the matching point.

    Subclass contract:

    * ``forward(x, context=None) -> (z, log_abs_det)`` and ``inverse(z, context=None) ->
      (x, log_abs_det)``. A bijector without a closed-form inverse raises
      :class:`InverseNotAvailable` from ``inverse``.
    * ``event_rank`` is the number of rightmost dimensions of ``x`` that form one event (0 for an
      elementwise map, 1 for vectors, 3 for ``(C, H, W)`` images); ``latent_rank`` the same for
      ``z`` (it defaults to ``event_rank``; it differs for reshaping bijectors such as ``Flatten``).
      ``log_abs_det`` has shape ``x.shape[:x.dim() - event_rank]``: summed over the event
      dimensions, never over the batch.
    * ``forward_shape(shape)`` and ``inverse_shape(shape)`` map a full shape (batch and event) to
      the other side and raise a ValueError naming expected and received sizes when the shape does
      not fit, so a model is shape-checked before any data flows.
    * ``forward`` is deterministic and free of side effects once initialised, and ``inverse`` is
      exact to working precision: memory-saving backpropagation rebuilds activations from outputs.
    * ``domain`` and ``codomain`` are :mod:`torch.distributions.constraints` of the data and latent
      values (real unless stated); ``sign`` is +1 or -1 for monotone elementwise maps.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> bijector = Affine(shape=(3,))
        >>> z, log_abs_det = bijector(torch.randn(8, 3))
        >>> log_abs_det.shape
        torch.Size([8, 3])
    """

    event_rank: int = 0
    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real

    @property
    def latent_rank(self) -> int:
        """Number of rightmost dimensions of ``z`` that form one event."""
        return self.event_rank

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent; return ``(z, log_abs_det)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data; return ``(x, log_abs_det)`` of this inverse map."""
        raise InverseNotAvailable(f"{type(self).__name__} has no closed-form inverse")

    def forward_shape(self, shape: Shape) -> torch.Size:
        """Shape of ``z`` for an input of full shape ``shape``; ValueError if it does not fit."""
        self._check_rank(shape, self.event_rank, "input")
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """Shape of ``x`` for a latent of full shape ``shape``; ValueError if it does not fit."""
        self._check_rank(shape, self.latent_rank, "latent")
        return torch.Size(shape)

    def rebuild_for_backward(self, z: Tensor, context: Tensor | None = None) -> Rebuilt:
        """Rebuild ``forward``'s input from its output ``z`` and re-run ``forward`` under autograd.

        Used by memory-saving backpropagation. Returns the rebuilt input (detached), the leaf
        tensors the re-run graph starts from, the re-run output and log-determinant, and a function
        that assembles the gradient with respect to the input from the leaves' gradients. The
        default inverts and re-runs; a bijector may override it to share work between the two
        (couplings evaluate their conditioner once instead of twice).
        """
        with torch.no_grad():
            x, _ = self.inverse(z, context)
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            z_again, log_abs_det = self(leaf, context)
        return x.detach(), (leaf,), z_again, log_abs_det, _first

    def as_transform(self, context: Tensor | None = None, cache_size: int = 1):
        """This bijector's forward map (data to latent) as a ``torch.distributions.Transform``.

        Use ``.inv`` of the result for the generative direction, e.g.
        ``TransformedDistribution(base, bijector.as_transform().inv)`` is the flow's distribution.
        """
        from flowkit.bijectors.interop import BijectorTransform

        return BijectorTransform(self, context=context, cache_size=cache_size)

    def _check_rank(self, shape: Shape, rank: int, what: str) -> None:
        if len(shape) < rank:
            raise ValueError(
                f"{type(self).__name__} expects {what} with at least {rank} dimensions "
                f"(its event rank), got shape {tuple(shape)}"
            )


class Compose(Bijector):
    r"""Composition :math:`f = f_n \circ \dots \circ f_1` of bijectors, applied first to last.

    The log-determinant is the sum of the parts', each summed over whatever event dimensions it
    leaves, so elementwise parts (event rank 0) mix freely with image- or vector-level parts. The
    composition's ``event_rank`` is the smallest that covers every part, computed as
    ``torch.distributions.ComposeTransform`` does.

    With ``memory_saving=True`` a training pass stores no activations inside the chain: the
    backward pass rebuilds each part's input from its output with the exact inverse and re-runs that
    part under autograd (invertible backpropagation), so memory no longer grows with the number of
    parts, for about one extra forward and one inverse pass of compute. The rebuilt chain input is
    compared with the true one; a drift above ``drift_tolerance`` (relative to ``max|x| + 1``)
    raises :class:`~flowkit.bijectors.memory.ReconstructionError` instead of returning inaccurate
    gradients. Parts must then be deterministic with exact inverses (all flowkit bijectors are).

    Args:
        *bijectors: The parts, in the order ``forward`` applies them (a single list also works).
        memory_saving: Use invertible backpropagation when autograd is on.
        drift_tolerance: Bound on the relative reconstruction error in memory-saving mode.

    Example:
        >>> from flowkit.bijectors import Affine, Sigmoid
        >>> flow = Compose(Affine(shape=(2,), event_rank=1), Sigmoid())
        >>> flow.event_rank
        1
    """

    bijectors: nn.ModuleList

    def __init__(
        self,
        *bijectors: Bijector | Iterable[Bijector],
        memory_saving: bool = False,
        drift_tolerance: float = 1e-3,
    ) -> None:
        super().__init__()
        self.memory_saving = bool(memory_saving)
        self.drift_tolerance = float(drift_tolerance)
        items: Iterable[object] = bijectors
        if len(bijectors) == 1 and not isinstance(bijectors[0], Bijector):
            items = bijectors[0]
        parts: list[Bijector] = []
        for index, part in enumerate(items):
            if not isinstance(part, Bijector):
                raise TypeError(
                    f"Compose expects Bijector parts, got {type(part).__name__} at position {index}"
                )
            parts.append(part)
        self.bijectors = nn.ModuleList(parts)
        rank = parts[-1].latent_rank if parts else 0
        for part in reversed(parts):
            rank += part.event_rank - part.latent_rank
            rank = max(rank, part.event_rank)
        self.event_rank = rank
        latent_rank = rank
        for part in parts:
            latent_rank += part.latent_rank - part.event_rank
            latent_rank = max(latent_rank, part.latent_rank)
        self._latent_rank = latent_rank

    @property
    def _parts(self) -> Sequence[Bijector]:
        # Every entry of the ModuleList is a Bijector, checked in __init__.
        return cast("Sequence[Bijector]", self.bijectors)

    @property
    def latent_rank(self) -> int:
        """Latent event rank, computed from the parts as ``ComposeTransform`` does."""
        return self._latent_rank

    # The base class declares domain and codomain as attributes, and mypy rejects
    # read-only properties in their place.
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        """Domain of the first part (real for an empty composition)."""
        return self._parts[0].domain if len(self.bijectors) else constraints.real

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        """Codomain of the last part (real for an empty composition)."""
        return self._parts[-1].codomain if len(self.bijectors) else constraints.real

    def __len__(self) -> int:
        return len(self.bijectors)

    def __iter__(self) -> Iterator[Bijector]:
        return iter(self._parts)

    def __getitem__(self, index: int) -> Bijector:
        return self._parts[index]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the parts first to last; return ``z`` and the summed log-determinant."""
        if self.memory_saving and torch.is_grad_enabled() and not is_compiling():
            from flowkit.bijectors.memory import invertible_backprop

            batch_rank = x.dim() - self.event_rank
            return invertible_backprop(self, x, context, self.drift_tolerance, batch_rank)
        return self._plain_forward(x, context)

    def _plain_forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        batch_rank = x.dim() - self.event_rank
        log_abs_det = x.new_zeros(x.shape[:batch_rank])
        for part in self._parts:
            x, part_log_abs_det = part(x, context)
            log_abs_det = log_abs_det + reduce_to_batch(part_log_abs_det, batch_rank)
        return x, log_abs_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Invert the parts last to first; return ``x`` and the summed log-determinant."""
        batch_rank = z.dim() - self.latent_rank
        log_abs_det = z.new_zeros(z.shape[:batch_rank])
        for part in reversed(self._parts):
            z, part_log_abs_det = part.inverse(z, context)
            log_abs_det = log_abs_det + reduce_to_batch(part_log_abs_det, batch_rank)
        return z, log_abs_det

    def forward_shape(self, shape: Shape) -> torch.Size:
        """Thread ``shape`` through every part's ``forward_shape``."""
        self._check_rank(shape, self.event_rank, "input")
        shape = torch.Size(shape)
        for part in self._parts:
            shape = part.forward_shape(shape)
        return shape

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """Thread ``shape`` back through every part's ``inverse_shape``."""
        self._check_rank(shape, self.latent_rank, "latent")
        shape = torch.Size(shape)
        for part in reversed(self._parts):
            shape = part.inverse_shape(shape)
        return shape


class Inverse(Bijector):
    """The inverse of a bijector: ``Inverse(b).forward`` is ``b.inverse`` and vice versa.

    Use it to turn a density-estimation bijector (fast ``forward``, e.g. MAF) into a sampler (fast
    ``inverse``, IAF), or to run a generative map in the normalizing direction.

    Args:
        bijector: The bijector to invert. Its parameters are shared, not copied.
    """

    bijector: Bijector

    def __init__(self, bijector: Bijector) -> None:
        super().__init__()
        if not isinstance(bijector, Bijector):
            raise TypeError(f"Inverse expects a Bijector, got {type(bijector).__name__}")
        self.bijector = bijector
        self.event_rank = bijector.latent_rank

    @property
    def latent_rank(self) -> int:
        """The inverted bijector's event rank."""
        return self.bijector.event_rank

    # The base class declares domain and codomain as attributes, and mypy rejects
    # read-only properties in their place.
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        """The inverted bijector's codomain."""
        return self.bijector.codomain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        """The inverted bijector's domain."""
        return self.bijector.domain

    @property
    def sign(self) -> int:
        """Sign of the derivative of an elementwise monotone map (that of the inverted bijector)."""
        # Only elementwise bijectors have a sign, declared as an int class attribute.
        return cast(int, self.bijector.sign)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the inverted bijector's ``inverse``."""
        return self.bijector.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the inverted bijector's ``forward``."""
        return self.bijector(z, context)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The inverted bijector's ``inverse_shape``."""
        return self.bijector.inverse_shape(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The inverted bijector's ``forward_shape``."""
        return self.bijector.forward_shape(shape)
