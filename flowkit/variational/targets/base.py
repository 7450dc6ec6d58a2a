"""Target: a log-density known up to a constant, with its log normalising constant where known."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit._checks import check_int
from flowkit._tensors import check_dtype, check_event_shape

__all__ = ["Target"]


class Target(nn.Module):
    r"""An unnormalised log-density :math:`\log \tilde p(x)` over vectors of size ``dim``.

    Subclass contract: ``_log_density(x)`` takes ``x`` of shape ``(batch, dim)`` and returns
    :math:`\log \tilde p(x)` of shape ``(batch,)`` in ``x``'s dtype; :attr:`log_z` is
    :math:`\log Z = \log \int \tilde p(x)\,dx` when known (None otherwise), so
    :math:`\log p(x) = \log \tilde p(x) - \log Z`; a target with an exact sampler sets
    ``can_sample`` and overrides ``_sample``.

    Calling a target (``target(x)``, the form :func:`flowkit.variational.fit` expects) checks
    ``x`` and accepts any number of batch dimensions: ``(*batch, dim)`` gives ``(*batch,)``.

    Args:
        dim: Size of one event.
        log_z: The log normalising constant, or None where it is not known.

    Example:
        >>> import math
        >>> class Laplace(Target):
        ...     def __init__(self) -> None:
        ...         super().__init__(dim=1, log_z=math.log(2.0))
        ...     def _log_density(self, x: torch.Tensor) -> torch.Tensor:
        ...         return -x.abs().sum(-1)
        >>> Laplace()(torch.zeros(2, 3, 1)).shape
        torch.Size([2, 3])
        >>> Laplace().log_prob(torch.zeros(1, 1))
        tensor([-0.6931])
    """

    can_sample: bool = False

    def __init__(self, dim: int, log_z: float | None) -> None:
        super().__init__()
        self.dim = check_int(type(self).__name__, "dim", dim, 1)
        self.log_z = None if log_z is None else float(log_z)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`\log \tilde p(x)` of ``x`` (shape ``(*batch, dim)``), shape ``(*batch,)``."""
        name = type(self).__name__
        check_dtype(name, x)
        check_event_shape(name, x, (self.dim,))
        batch_shape = x.shape[:-1]
        return self._log_density(x.reshape(-1, self.dim)).reshape(batch_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        r"""The normalised :math:`\log p(x) = \log \tilde p(x) - \log Z` (needs :attr:`log_z`)."""
        if self.log_z is None:
            raise ValueError(
                f"{type(self).__name__}.log_prob needs the log normalising constant, which is not "
                "known for this target; call the target for the unnormalised log-density"
            )
        return self(x) - self.log_z

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``n`` exact samples, shape ``(n, dim)``, on the CPU.

        Args:
            n: Number of samples (an int >= 0).
            generator: Random generator (None: torch's global one).
            dtype: Floating dtype of the samples (default: torch's default dtype).

        Raises:
            NotImplementedError: The target has no exact sampler (``can_sample`` is False).
        """
        name = type(self).__name__
        if not self.can_sample:
            raise NotImplementedError(f"{name} has no exact sampler (can_sample is False)")
        n = check_int(f"{name}.sample", "n", n, 0)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"{name}.sample expects a floating dtype, got {dtype}")
        return self._sample(n, generator).to(dtype)

    def _log_density(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` exact samples in float64 on the CPU."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        """Describe the dimension and log Z in the module's repr."""
        return f"dim={self.dim}, log_z={self.log_z}"
