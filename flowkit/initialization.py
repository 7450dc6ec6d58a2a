"""Explicit data-dependent initialisation (ActNorm and friends)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from flowkit._checks import accepts_context

__all__ = ["DataDependentInit", "initialize"]


class DataDependentInit(nn.Module):
    """Mixin for modules whose parameters are set from the first batch they see.

    The state lives in a boolean buffer ``initialized`` that is saved in the state dict, so a loaded
    checkpoint is never initialised again. Initialisation happens only inside
    :func:`initialize`, never on the hot path: ``forward`` tests plain Python flags that
    :func:`initialize` and ``load_state_dict`` keep in step with the buffer.

    A module used in training mode before it was initialised warns once (a ``UserWarning``) that
    :func:`initialize` was not called: it would train from its identity start instead of from
    standardised activations.

    Subclasses call ``_init_from(x)`` at the start of ``forward`` (or ``_check_initialized()``
    where they use their parameters without going through ``forward``) and implement
    ``_initialize_from(x)``, which sets the parameters from ``x`` (called under ``no_grad``).
    """

    initialized: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self._initializing = False
        # Python mirrors of the buffer, so the hot path never reads a tensor.
        self._known_initialized = False
        self._warned = False

    @property
    def initializing(self) -> bool:
        """Whether :func:`initialize` is running its pass, so the next input sets the parameters."""
        return self._initializing

    def _init_from(self, x: Tensor) -> None:
        if self._initializing:
            with torch.no_grad():
                self._initialize_from(x)
            self.initialized.fill_(True)
            self._initializing = False
            self._known_initialized = True
        else:
            self._check_initialized()

    def _check_initialized(self) -> None:
        if self.training and not self._known_initialized and not self._warned:
            if self.initialized.is_meta:  # shape inference on the meta device has no values
                return
            # Read once (the buffer may have been set by a broadcast or by hand), then remembered.
            if bool(self.initialized):
                self._known_initialized = True
                return
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} is used in training mode but was never initialised from "
                "data; call flowkit.initialize(flow, batch) with a batch of training data before "
                "training (or load a checkpoint of an initialised model)",
                UserWarning,
                stacklevel=3,
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = bool(self.initialized)

    def _initialize_from(self, x: Tensor) -> None:
        raise NotImplementedError


def initialize(
    model: nn.Module, batch: Tensor, context: Tensor | None = None, *, force: bool = False
) -> nn.Module:
    """Run data-dependent initialisation of every layer of ``model`` that needs it.

    One forward pass of ``batch`` (data to latent) sets each :class:`DataDependentInit` layer from
    the activations it receives, in order, so each layer sees the output of already-initialised
    layers before it (as in Glow). Layers already initialised, e.g. loaded from a checkpoint, are
    left alone unless ``force`` is set.

    Under ``torch.distributed``, rank 0's result is broadcast to every rank, so all processes start
    from the same parameters whatever batch each of them holds.

    Args:
        model: A ``Flow``, a ``Bijector``, or any module whose forward takes the batch (and the
            context, if its ``forward`` has a parameter named ``context``), e.g. a conditioner.
        batch: A batch of data, as the model's forward takes it.
        context: Conditioning input for conditional models.
        force: Re-initialise layers that are already initialised.

    Returns:
        ``model``, for chaining.

    Raises:
        RuntimeError: If a layer that needed initialisation received no data in the pass.

    Example:
        >>> from flowkit.bijectors import ActNorm
        >>> norm = initialize(ActNorm(3), torch.randn(16, 3, 4, 4) * 5 + 2)
        >>> bool(norm.initialized)
        True
    """
    pending = [
        m
        for m in model.modules()
        if isinstance(m, DataDependentInit) and (force or not m.initialized)
    ]
    if pending:
        for module in pending:
            module._initializing = True
        try:
            with torch.no_grad():
                # A Flow's log_prob handles batch flattening and context broadcasting.
                log_prob = getattr(model, "log_prob", None)
                if callable(log_prob):
                    log_prob(batch, context)
                elif context is None and not accepts_context(model):
                    model(batch)
                else:
                    model(batch, context)
        finally:
            missed = [m for m in pending if m._initializing]
            for module in pending:
                module._initializing = False
        if missed:
            names = {id(m): n for n, m in model.named_modules()}
            raise RuntimeError(
                "initialize: these layers received no data in the initialisation pass: "
                + ", ".join(names.get(id(m), type(m).__name__) for m in missed)
            )
    _broadcast_from_rank_zero(model)
    return model


def _broadcast_from_rank_zero(model: nn.Module) -> None:
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            # Receive into a copy, then write in place through autograd: that bumps the tensor's
            # version counter (a collective writing into it directly does not), which is what
            # caches of derived weights (InvertibleConv1x1) key on.
            received = tensor.detach().clone()
            distributed.broadcast(received, src=0)
            tensor.copy_(received)
