"""MixtureOfGaussians: a learned mixture of diagonal Gaussians as a base distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._checks import check_int, check_shape
from flowkit._tensors import sum_rightmost
from flowkit.distributions._inputs import check_temperature
from flowkit.distributions.base import Distribution, SampleShape, sample_shape_of

__all__ = ["MixtureOfGaussians"]

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class MixtureOfGaussians(Distribution):
    r"""Mixture of :math:`K` diagonal Gaussians with learned weights, means and scales.

    .. math::
        p(z) = \sum_{k=1}^K \pi_k \, N(z; \mu_k, \mathrm{diag}(\sigma_k^2)),
        \qquad \pi = \mathrm{softmax}(\ell),

    evaluated as a ``logsumexp`` over components. A multi-modal base lets a flow with few layers
    fit data with separated clusters, which a unimodal base would force it to tear apart.

    The weights start uniform, the scales at 1 and the means at standard normal draws (so the
    components start apart and their gradients differ).

    Sampling picks a component :math:`k \sim \mathrm{Categorical}(\pi)`, then
    :math:`z = \mu_k + T \sigma_k \epsilon` with :math:`\epsilon \sim N(0, I)` and temperature
    :math:`T` (which scales every component's standard deviation; the weights are unchanged).
    The draw is **not fully reparameterised**: gradients of a sample reach :math:`\mu` and
    :math:`\sigma`, but not the weights, because the component choice is discrete. Training by
    maximum likelihood (``log_prob``) is unaffected; objectives that differentiate through samples
    (e.g. reverse KL) see no gradient for the weights.

    Args:
        event_shape: Shape of one event.
        components: Number of components :math:`K`.
        learnable: Whether weights, means and scales are parameters (True) or fixed buffers.
        seed: Seed of the initial means (None draws from torch's global generator).

    Shapes:
        ``log_prob``: ``z`` of shape ``(*batch, *event_shape)`` gives ``(*batch,)``;
        ``sample(n)``: ``(*n, *event_shape)``.

    References:
        Izmailov, Kirichenko, Finzi & Wilson, Semi-Supervised Learning with Normalizing Flows
        (2020) (FlowGMM: a Gaussian-mixture base); Bishop, Pattern Recognition and Machine
        Learning (2006), 9.2.

    Example:
        >>> base = MixtureOfGaussians((2,), components=3, seed=0)
        >>> base.log_prob(torch.zeros(4, 2)).shape
        torch.Size([4])
        >>> base.sample(5, temperature=0.5).shape
        torch.Size([5, 2])
    """

    logits: Tensor
    means: Tensor
    log_scales: Tensor

    def __init__(
        self,
        event_shape: Sequence[int],
        components: int,
        *,
        learnable: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.components = check_int("MixtureOfGaussians", "components", components, 1)
        self.event_shape = torch.Size(
            check_shape("MixtureOfGaussians", "event_shape", event_shape, minimum=0)
        )
        check_int("MixtureOfGaussians", "seed", seed, optional=True)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        shape = (self.components,) + tuple(self.event_shape)
        values = {
            "logits": torch.zeros(self.components),
            "means": torch.randn(shape, generator=generator),
            "log_scales": torch.zeros(shape),
        }
        for name, value in values.items():
            if learnable:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def component_log_prob(self, z: Tensor) -> Tensor:
        r"""Log-density of ``z`` under each component, :math:`\log N(z; \mu_k, \sigma_k^2)`.

        Returns a tensor of shape ``(*batch, K)``.
        """
        self._check_event(z)
        rank = len(self.event_shape)
        z = z.unsqueeze(z.dim() - rank)
        eps = (z - self.means) * torch.exp(-self.log_scales)
        return sum_rightmost(-0.5 * eps.square() - self.log_scales - HALF_LOG_TWO_PI, rank)

    def log_weights(self) -> Tensor:
        r""":math:`\log \pi_k`, shape ``(K,)``."""
        return torch.log_softmax(self.logits, dim=-1)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z`` under the mixture; ``context`` is unused."""
        return torch.logsumexp(self.component_log_prob(z) + self.log_weights(), dim=-1)

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Draw ``n`` samples: a component by weight, then its Gaussian at ``temperature``."""
        temperature = check_temperature("MixtureOfGaussians.sample", temperature)
        if temperature == 0.0:
            raise ValueError(f"MixtureOfGaussians expects temperature > 0, got {temperature}")
        shape = sample_shape_of(n, "MixtureOfGaussians.sample")
        count = math.prod(shape)
        with torch.no_grad():
            weights = torch.softmax(self.logits, dim=-1)
            index = torch.multinomial(weights, count, replacement=True) if count else None
        if index is None:
            return self.means.new_zeros(shape + self.event_shape)
        eps = torch.randn(
            (count,) + tuple(self.event_shape), dtype=self.means.dtype, device=self.means.device
        )
        z = self.means[index] + self.log_scales[index].exp() * (eps * temperature)
        return z.reshape(shape + self.event_shape)

    def extra_repr(self) -> str:
        """Describe the event shape and the number of components in the module's repr."""
        return f"event_shape={tuple(self.event_shape)}, components={self.components}"
