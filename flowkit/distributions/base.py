"""Base class of flowkit distributions, and a wrapper making any torch distribution one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor, nn
from torch.distributions import Distribution as TorchDistribution

from flowkit._tensors import check_event_shape
from flowkit.distributions._inputs import check_sample_shape, check_temperature

__all__ = ["Distribution", "SampleShape", "TorchBase", "sample_shape_of"]

SampleShape = Union[int, Sequence[int], torch.Size, None]


def sample_shape_of(n: SampleShape, owner: str = "sample") -> torch.Size:
    """``None`` -> ``()``, an int ``n >= 0`` -> ``(n,)``, a sequence of ints ``>= 0`` -> itself.

    Raises:
        TypeError: ``n`` is of another type (``2.5``, ``True``, ``"3"``).
        ValueError: A negative count.
    """
    return check_sample_shape(owner, n)


class Distribution(nn.Module):
    """A (possibly conditional) distribution over events of shape ``event_shape``; an ``nn.Module``.

    Subclass contract: ``log_prob(z, context=None)`` returns the batch-shaped log-density (summed
    over the event); ``sample(n=None, context=None, temperature=1.0)`` returns tensors of shape
    ``sample_shape + context_batch_shape + event_shape`` and is reparameterised (differentiable in
    the parameters) where the family allows. ``temperature`` scales the standard deviation, as
    Glow's ``eps_std``. ``context_shape`` is the event shape of the context (None when
    unconditional).
    """

    event_shape: torch.Size
    context_shape: tuple[int, ...] | None = None

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z``, summed over the event dimensions."""
        raise NotImplementedError

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw samples; see the class docstring for shapes."""
        raise NotImplementedError

    def _check_event(self, z: Tensor) -> None:
        check_event_shape(type(self).__name__, z, tuple(self.event_shape), "value")

    def _batch_shape(self, context: Tensor | None) -> torch.Size:
        if context is None or self.context_shape is None:
            return torch.Size()
        return context.shape[: context.dim() - len(self.context_shape)]


class TorchBase(Distribution):
    """A ``torch.distributions.Distribution`` used as a flowkit base distribution.

    The distribution's own batch shape must be empty (all its dimensions belong to the event); wrap
    it in ``torch.distributions.Independent`` to reinterpret batch dimensions. Temperature other
    than 1 is not defined for a general family and raises.

    Args:
        distribution: The torch distribution.
    """

    def __init__(self, distribution: TorchDistribution) -> None:
        super().__init__()
        if not isinstance(distribution, TorchDistribution):
            raise TypeError(
                f"TorchBase expects a torch.distributions.Distribution, got "
                f"{type(distribution).__name__}"
            )
        if distribution.batch_shape:
            raise ValueError(
                "TorchBase expects a distribution with empty batch shape, got batch shape "
                f"{tuple(distribution.batch_shape)}; wrap it in torch.distributions.Independent"
            )
        self.distribution = distribution
        self.event_shape = distribution.event_shape

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z`` under the wrapped distribution; ``context`` is unused."""
        self._check_event(z)
        return self.distribution.log_prob(z)

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw ``n`` samples (reparameterised where the family allows) at temperature 1."""
        if check_temperature("TorchBase.sample", temperature) != 1.0:
            raise ValueError(
                f"TorchBase({type(self.distribution).__name__}) samples only at temperature 1, "
                f"got {temperature}"
            )
        shape = sample_shape_of(n, "TorchBase.sample")
        if self.distribution.has_rsample:
            return self.distribution.rsample(shape)
        return self.distribution.sample(shape)
