"""ParameterCache: tensors derived from a module's parameters, recomputed only when they change."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowkit._tensors import is_compiling
from flowkit.bijectors.precision import full_precision

__all__ = ["DerivedWeights", "ParameterCache", "clear_caches"]


class ParameterCache:
    """Tensors computed from a module's parameters and buffers, kept until one of those changes.

    A linear bijector's weight (built from its factors), the weight's inverse and its
    log-determinant depend only on the parameters, so evaluation and sampling need them once per
    parameter change, not once per call. :meth:`get` returns a cached value when

    * autograd is off (``torch.no_grad()``, ``torch.inference_mode()``) or no parameter requires a
      gradient, and
    * no parameter or buffer of the module has changed since the value was computed.

    Otherwise it calls ``compute`` afresh, so gradients reach the parameters and ``torch.compile``
    traces the computation (caching is skipped while compiling).

    A change is detected from each tensor's version counter, storage address, dtype and device:
    an optimizer step and ``load_state_dict`` (in-place updates) bump the version, ``.to()``,
    ``.double()`` and ``.cuda()`` replace the tensors. The cache holds a reference to the tensors it
    was keyed on, so their storage cannot be freed and reused by a new parameter at the same
    address while the key stands. Values computed inside ``torch.inference_mode`` are kept apart
    from those computed outside it (inference tensors cannot enter autograd).

    The cache is plain Python state: it is not part of the module's ``state_dict``.

    Example:
        >>> layer = torch.nn.Linear(3, 3)
        >>> cache = ParameterCache()
        >>> with torch.no_grad():
        ...     first = cache.get(layer, "gram", lambda: layer.weight @ layer.weight.T)
        ...     again = cache.get(layer, "gram", lambda: layer.weight @ layer.weight.T)
        >>> first is again
        True
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._anchors: list[Tensor] = []
        self._values: dict[str, Tensor] = {}

    def clear(self) -> None:
        """Forget every cached value."""
        self._key, self._anchors, self._values = None, [], {}

    def get(self, module: nn.Module, name: str, compute: Callable[[], Tensor]) -> Tensor:
        """The value ``compute()`` for ``module``'s current parameters, cached under ``name``.

        Args:
            module: The module whose parameters and buffers the value depends on.
            name: Key of the value among those cached for ``module``.
            compute: Zero-argument function computing the value from the module's state.

        Returns:
            The value, detached from autograd when it comes from (or goes into) the cache.
        """
        parameters = list(module.parameters())
        if is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in parameters)):
            return compute()
        tensors = parameters + list(module.buffers())
        try:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors) + (
                torch.is_inference_mode_enabled(),
            )
        except RuntimeError:
            # Inference tensors (parameters moved inside inference_mode) have no version counter.
            return compute().detach()
        if key != self._key:
            self._key = key
            self._anchors = [t.detach() for t in tensors]
            self._values = {}
        value = self._values.get(name)
        if value is None:
            value = self._values[name] = compute().detach()
        return value


class DerivedWeights(nn.Module):
    r"""Mixin of linear bijectors: a weight, its inverse and its log-determinant, cached.

    :math:`W`, :math:`W^{-1}` and :math:`\log|\det W|` are derived from the parameters and cached
    outside autograd by a :class:`ParameterCache`.

    Subclasses implement ``_compute_weight``, ``_compute_inverse`` (in float64, returned in the
    working dtype) and ``_compute_log_det``; ``_derived(name)`` returns the current value of
    ``"weight"``, ``"inverse"`` or ``"log_det"``. Shared by the image (1x1 convolution) and the
    vector linear maps.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = ParameterCache()

    def _compute_weight(self) -> Tensor:
        raise NotImplementedError

    def _compute_inverse(self) -> Tensor:
        raise NotImplementedError

    def _compute_log_det(self) -> Tensor:
        raise NotImplementedError

    def _derived(self, name: str) -> Tensor:
        compute = {
            "weight": self._compute_weight,
            "inverse": self._compute_inverse,
            "log_det": self._compute_log_det,
        }[name]
        anchor = next(iter(self.parameters()), None)
        if anchor is None:
            return self._cache.get(self, name, compute)
        # Derived in the parameters' dtype even under autocast: the cache outlives the context.
        with full_precision(anchor):
            return self._cache.get(self, name, compute)

    def weight_and_log_det(self) -> tuple[Tensor, Tensor]:
        r"""The current :math:`W` and :math:`\log|\det W|` (cached outside autograd)."""
        return self._derived("weight"), self._derived("log_det")


def clear_caches(model: nn.Module) -> None:
    """Forget every :class:`ParameterCache` value held by ``model``'s modules.

    Needed after a parameter update that bypasses version counters, such as a raw
    ``torch.distributed.broadcast`` into ``.data`` (DistributedDataParallel does this when it wraps
    a model).
    """
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, ParameterCache):
                value.clear()
