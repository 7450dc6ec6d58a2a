"""Gaussian base distributions: standard, learned diagonal, and conditional diagonal."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._tensors import check_event_shape, sum_rightmost
from flowkit.distributions._inputs import check_temperature
from flowkit.distributions.base import Distribution, SampleShape, sample_shape_of

__all__ = ["ConditionalDiagonalNormal", "DiagonalNormal", "StandardNormal"]

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob(z: Tensor, mean: Tensor | None, log_scale: Tensor | None, rank: int) -> Tensor:
    if mean is None or log_scale is None:
        return sum_rightmost(-0.5 * z.square() - HALF_LOG_TWO_PI, rank)
    eps = (z - mean) * torch.exp(-log_scale)
    return sum_rightmost(-0.5 * eps.square() - log_scale - HALF_LOG_TWO_PI, rank)


class StandardNormal(Distribution):
    r""":math:`N(0, I)` over events of shape ``event_shape``.

    ``sample(..., temperature=T)`` draws from :math:`N(0, T^2 I)`.

    Args:
        event_shape: Shape of one event.

    Example:
        >>> base = StandardNormal((2,))
        >>> base.log_prob(torch.zeros(3, 2))
        tensor([-1.8379, -1.8379, -1.8379])
    """

    _reference: Tensor

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        # Carries dtype and device, so .to() and .double() move the samples too.
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z`` under :math:`N(0, I)`; ``context`` is unused."""
        self._check_event(z)
        return _normal_log_prob(z, None, None, len(self.event_shape))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw ``n`` samples from :math:`N(0, T^2 I)`; ``context`` is unused."""
        temperature = check_temperature(f"{type(self).__name__}.sample", temperature)
        shape = sample_shape_of(n, f"{type(self).__name__}.sample") + self.event_shape
        eps = torch.randn(shape, dtype=self._reference.dtype, device=self._reference.device)
        return eps * temperature if temperature != 1.0 else eps

    def extra_repr(self) -> str:
        """Describe the event shape in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}"


class DiagonalNormal(Distribution):
    r"""Diagonal Gaussian :math:`N(\mu, \mathrm{diag}(\sigma^2))`, learned :math:`\mu, \log\sigma`.

    Args:
        event_shape: Shape of one event.
        learnable: Whether :math:`\mu` and :math:`\log\sigma` are parameters.
    """

    mean: Tensor
    log_scale: Tensor

    def __init__(self, event_shape: Sequence[int], *, learnable: bool = True) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        mean, log_scale = torch.zeros(self.event_shape), torch.zeros(self.event_shape)
        if learnable:
            self.mean, self.log_scale = nn.Parameter(mean), nn.Parameter(log_scale)
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_scale", log_scale)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z``, summed over the event; ``context`` is unused."""
        self._check_event(z)
        return _normal_log_prob(z, self.mean, self.log_scale, len(self.event_shape))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        r"""Draw ``n`` reparameterised samples :math:`\mu + T \sigma \epsilon`."""
        temperature = check_temperature(f"{type(self).__name__}.sample", temperature)
        shape = sample_shape_of(n, f"{type(self).__name__}.sample") + self.event_shape
        eps = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.log_scale.exp() * (eps * temperature)

    def extra_repr(self) -> str:
        """Describe the event shape in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}"


class ConditionalDiagonalNormal(Distribution):
    r"""Diagonal Gaussian whose :math:`(\mu, \log\sigma)` are a network of the context.

    The network maps a context of shape ``(*batch, *context_shape)`` to ``(*batch, 2 * D)`` with
    ``D`` the number of elements of an event, mean and log-scale interleaved (``[..., 0::2]`` the
    mean), e.g. :class:`flowkit.nn.MLP` from the context's features to ``2 * D``.

    Args:
        event_shape: Shape of one event.
        conditioner: Network of the context.
        context_shape: Event shape of the context (``(k,)`` for a feature vector).

    Example:
        >>> from flowkit.nn import MLP
        >>> base = ConditionalDiagonalNormal((2,), MLP(3, 4), context_shape=(3,))
        >>> base.sample(5, context=torch.randn(7, 3)).shape
        torch.Size([5, 7, 2])
    """

    context_shape: tuple[int, ...]

    def __init__(
        self, event_shape: Sequence[int], conditioner: nn.Module, *, context_shape: Sequence[int]
    ) -> None:
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        self.context_shape = tuple(int(s) for s in context_shape)
        self.conditioner = conditioner

    def _params(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError(
                f"ConditionalDiagonalNormal expects a context of event shape {self.context_shape}, "
                "got None"
            )
        check_event_shape("ConditionalDiagonalNormal", context, self.context_shape, "context")
        batch = self._batch_shape(context)
        params = self.conditioner(context)
        size = math.prod(self.event_shape)
        if params.shape[-1] != 2 * size:
            raise ValueError(
                f"ConditionalDiagonalNormal: the conditioner must return 2 * {size} features, got "
                f"shape {tuple(params.shape)}"
            )
        params = params.reshape(batch + (size, 2))
        mean = params[..., 0].reshape(batch + self.event_shape)
        log_scale = params[..., 1].reshape(batch + self.event_shape)
        return mean, log_scale

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z`` under the Gaussian that ``context`` parameterises."""
        self._check_event(z)
        mean, log_scale = self._params(context)
        return _normal_log_prob(z, mean, log_scale, len(self.event_shape))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw ``n`` reparameterised samples per context, shape ``n + batch + event_shape``."""
        temperature = check_temperature(f"{type(self).__name__}.sample", temperature)
        mean, log_scale = self._params(context)
        shape = sample_shape_of(n, f"{type(self).__name__}.sample") + mean.shape
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
        return mean + log_scale.exp() * (eps * temperature)

    def extra_repr(self) -> str:
        """Describe the event and context shapes in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}, context_shape={self.context_shape}"
