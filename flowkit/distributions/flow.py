"""Flow: a base distribution pushed through a bijector, and its torch.distributions view."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Distribution as TorchDistribution
from torch.distributions import constraints

from flowkit._tensors import check_dtype, check_event_shape, reduce_to_batch
from flowkit.bijectors.base import Bijector
from flowkit.bijectors.cache import clear_caches
from flowkit.bijectors.multiscale import latent_shapes
from flowkit.distributions._inputs import (
    check_finite,
    check_matches_module,
    check_sample_shape,
    check_temperature,
    module_dtype_device,
)
from flowkit.distributions.base import Distribution, SampleShape, TorchBase

__all__ = ["AuxiliaryLoss", "Flow", "FlowDistribution", "TrainingLoss"]


@dataclass
class AuxiliaryLoss:
    """A term that a model adds to its training objective, from :meth:`Flow.auxiliary_loss`.

    Attributes:
        loss: Scalar added to the objective (already weighted).
        metrics: Per-example values, shape ``(batch,)``, that the trainer logs as their means
            (for example Glow's class-prediction loss in bits and its accuracy).
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainingLoss:
    """A loss that replaces the negative log-likelihood, from :meth:`Flow.training_loss`.

    Attributes:
        loss: Scalar to minimise.
        nll: Per-example negative log-likelihood, shape ``(batch,)``, when the loss is its mean
            plus other terms (a likelihood with penalties), else None (a loss that is no
            likelihood, such as flow matching's).
        metrics: Per-example values, shape ``(batch,)``, that the trainer logs as their means.
    """

    loss: Tensor
    nll: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Flow(nn.Module):
    r"""A normalizing flow: data :math:`x`, latent :math:`z = f(x)` under a base distribution.

    :math:`\log p(x \mid c) = \log p_Z(f(x; c) \mid c) + \log|\det \partial f / \partial x|`.
    Sampling draws :math:`z` from the base (optionally at a temperature) and returns
    :math:`f^{-1}(z)`.

    Every public method takes any number of batch dimensions; the bijector sees them flattened
    into one, so convolutional conditioners work unchanged. The whole model is shape-checked when
    the flow is built: ``event_shape`` is the data shape implied by the base's event shape.

    Args:
        base: The latent distribution: a flowkit :class:`~flowkit.distributions.Distribution`, or
            any ``torch.distributions.Distribution`` with empty batch shape.
        bijector: Map from data to latent.
        context_shape: Event shape of the conditioning input (``()`` for class labels, ``(k,)`` for
            a feature vector), or None for an unconditional flow. Defaults to the base's.
        num_classes: For a class-conditional flow, the number of classes: the context is then an
            integer label in ``[0, num_classes)`` (``context_shape`` defaults to ``()``).

    Hooks:
        Presets subclass ``Flow`` to give the trainer what a model needs beyond its
        log-likelihood, through members that every flow has: :meth:`auxiliary_loss` (an
        extra training term, such as Glow's class-prediction loss), :meth:`training_loss` (a
        loss that replaces the negative log-likelihood, such as a continuous flow's flow-matching
        loss), :meth:`for_inference` (a copy prepared for evaluation and sampling, such as Glow's
        ActNorm fusion) and :attr:`training_noise_std` (Gaussian noise the model is trained
        under, such as TarFlow's). The defaults add nothing, replace nothing, return the flow
        itself and add no noise. Evaluation always uses :meth:`log_prob`.

    Inputs are checked at every public method: a tensor of the flow's floating dtype (that of its
    parameters; a flow without parameters takes any) on its device, with the event shape; a context
    exactly when the flow is conditional (an unconditional flow raises on one rather than ignore
    it). A batch with no examples gives empty results without running the bijector.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> flow = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1))
        >>> flow.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
        >>> flow.sample(3).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        base: Distribution | TorchDistribution,
        bijector: Bijector,
        *,
        context_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(base, TorchDistribution):
            base = TorchBase(base)
        if not isinstance(base, Distribution):
            raise TypeError(
                f"Flow expects a flowkit or torch distribution as base, got {type(base).__name__}"
            )
        if not isinstance(bijector, Bijector):
            raise TypeError(f"Flow expects a Bijector, got {type(bijector).__name__}")
        self.base = base
        self.bijector = bijector
        self.latent_shape = torch.Size(base.event_shape)
        if bijector.latent_rank > len(self.latent_shape):
            raise ValueError(
                f"Flow: the bijector's latent events have rank {bijector.latent_rank}, but the "
                f"base distribution's event shape {tuple(self.latent_shape)} has rank "
                f"{len(self.latent_shape)}"
            )
        self.event_shape = torch.Size(bijector.inverse_shape(self.latent_shape))
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(
                    f"Flow expects num_classes as an integer >= 2, got {num_classes!r}"
                )
            if context_shape is not None and tuple(context_shape) != ():
                raise ValueError(
                    "Flow: a class-conditional flow takes integer labels, context_shape (), got "
                    f"{tuple(context_shape)}"
                )
            context_shape = ()
        if context_shape is None:
            context_shape = base.context_shape
        self.context_shape = None if context_shape is None else tuple(int(s) for s in context_shape)
        self.num_classes = num_classes

    # --- input handling -------------------------------------------------------------------------
    def _check_tensor(
        self, owner: str, x: Tensor, event_shape: torch.Size, what: str
    ) -> torch.Size:
        """Check type, dtype, device and event shape of ``x``; return its batch shape."""
        check_dtype(owner, x, what)
        dtype, device = module_dtype_device(self)
        check_matches_module(owner, x, dtype, device, what, "flow")
        check_event_shape(owner, x, tuple(event_shape), what)
        return x.shape[: x.dim() - len(event_shape)]

    def _context_batch(self, context: Tensor | None) -> torch.Size:
        if context is None or self.context_shape is None:
            return torch.Size()
        return context.shape[: context.dim() - len(self.context_shape)]

    def _prepare_context(
        self, owner: str, context: Tensor | None, batch_shape: torch.Size
    ) -> Tensor | None:
        """Check the context and broadcast it to ``batch_shape``, flattened to one batch dim."""
        if self.context_shape is None:
            if context is not None:
                raise ValueError(
                    f"{owner}: the flow is unconditional (context_shape None) but got a context of "
                    f"shape {_shape_of(context)}; build the Flow with context_shape to condition it"
                )
            return None
        if context is None:
            raise ValueError(
                f"Flow is conditional and expects a context of event shape {self.context_shape}, "
                "got None"
            )
        if not isinstance(context, Tensor):
            raise TypeError(
                f"{owner} expects the context as a torch.Tensor, got {type(context).__name__}"
            )
        dtype, device = module_dtype_device(self)
        check_matches_module(owner, context, dtype, device, "context", "flow")
        check_event_shape(owner, context, self.context_shape, "context")
        target = batch_shape + torch.Size(self.context_shape)
        try:
            context = context.expand(target)
        except RuntimeError:
            raise ValueError(
                f"Flow: context of shape {tuple(context.shape)} does not broadcast to the batch "
                f"shape {tuple(batch_shape)} of the data (expected {tuple(target)})"
            ) from None
        return context.reshape((-1,) + tuple(self.context_shape))

    def _empty(
        self, batch_shape: torch.Size, event_shape: torch.Size, like: Tensor | None
    ) -> Tensor:
        """An empty result for a batch with no examples (the bijector never sees it)."""
        if like is not None:
            return like.new_empty(batch_shape + event_shape)
        dtype, device = module_dtype_device(self)
        return torch.empty(
            batch_shape + event_shape,
            dtype=dtype or torch.get_default_dtype(),
            device=device,
        )

    # --- density --------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``x`` (shape ``(*batch, *event_shape)``), shape ``batch``.

        A batch with no examples gives an empty result.
        """
        return self.latent_and_log_prob(x, context)[1]

    def latent_and_log_prob(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The latent ``z = f(x)`` and ``log_prob(x)`` from one pass (shapes as encode/log_prob)."""
        batch_shape = self._check_tensor("Flow.log_prob", x, self.event_shape, "input")
        check_finite("Flow.log_prob", x)
        flat_context = self._prepare_context("Flow.log_prob", context, batch_shape)
        if not batch_shape.numel():
            return self._empty(batch_shape, self.latent_shape, x), self._empty(
                batch_shape, torch.Size(), x
            )
        z, log_abs_det = self.bijector(x.reshape((-1,) + self.event_shape), flat_context)
        log_prob = self.base.log_prob(z, flat_context) + _to_batch(
            log_abs_det, z, self.latent_shape
        )
        return z.reshape(batch_shape + self.latent_shape), log_prob.reshape(batch_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`, so that wrappers such as DistributedDataParallel call it."""
        return self.log_prob(x, context)

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The latent ``z = f(x)`` of data ``x`` (shape ``(*batch, *latent_shape)``)."""
        batch_shape = self._check_tensor("Flow.encode", x, self.event_shape, "input")
        flat_context = self._prepare_context("Flow.encode", context, batch_shape)
        if not batch_shape.numel():
            return self._empty(batch_shape, self.latent_shape, x)
        z, _ = self.bijector(x.reshape((-1,) + self.event_shape), flat_context)
        return z.reshape(batch_shape + self.latent_shape)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The data ``x = f^{-1}(z)`` of latents ``z`` (shape ``(*batch, *latent_shape)``)."""
        batch_shape = self._check_tensor("Flow.decode", z, self.latent_shape, "latent")
        flat_context = self._prepare_context("Flow.decode", context, batch_shape)
        if not batch_shape.numel():
            return self._empty(batch_shape, self.event_shape, z)
        x, _ = self.bijector.inverse(z.reshape((-1,) + self.latent_shape), flat_context)
        return x.reshape(batch_shape + self.event_shape)

    # --- sampling -------------------------------------------------------------------------------
    def _draw(
        self, owner: str, n: SampleShape, context: Tensor | None, temperature: float
    ) -> tuple[Tensor | None, Tensor | None, torch.Size]:
        """Base noise flattened to one batch dim (None for an empty batch), context, batch shape."""
        sample_shape = check_sample_shape(owner, n)
        temperature = check_temperature(owner, temperature)
        batch_shape = sample_shape + self._context_batch(context)
        flat_context = self._prepare_context(owner, context, batch_shape)
        if not batch_shape.numel():
            return None, flat_context, batch_shape
        if self.base.context_shape is None:
            z = self.base.sample(batch_shape, temperature=temperature)
        else:
            z = self.base.sample(sample_shape, context, temperature=temperature)
        return z.reshape((-1,) + self.latent_shape), flat_context, batch_shape

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        r"""Draw samples of shape ``(*n, *context_batch, *event_shape)``.

        The draw is reparameterised (gradients reach the parameters, as ``rsample``); wrap the call
        in ``torch.no_grad()`` when only the values are needed. ``temperature`` :math:`T` draws the
        base noise from :math:`N(0, T^2 I)`, Glow's ``eps_std``.

        Args:
            n: Number of samples (an int >= 0), a sample shape (a tuple of ints >= 0), or None for
                one sample per context row (a single sample for an unconditional flow).
            context: Conditioning input of shape ``(*context_batch, *context_shape)``.
            temperature: Scale of the base noise, a finite number >= 0.

        Raises:
            TypeError: ``n`` is not an int, a tuple of ints or None (e.g. ``2.5``).
            ValueError: A negative count or temperature, or a NaN or infinite temperature.
        """
        z, flat_context, batch_shape = self._draw("Flow.sample", n, context, temperature)
        if z is None:
            return self._empty(batch_shape, self.event_shape, None)
        x, _ = self.bijector.inverse(z, flat_context)
        return x.reshape(batch_shape + self.event_shape)

    def rsample(self, n: SampleShape = None, context: Tensor | None = None) -> Tensor:
        """Reparameterised sample; the same as :meth:`sample` at temperature 1."""
        return self.sample(n, context)

    def sample_and_log_prob(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density under the model (at temperature 1), in one pass.

        The log-density costs no extra network evaluation: it comes from the inverse pass.
        Arguments as :meth:`sample`.
        """
        z, flat_context, batch_shape = self._draw(
            "Flow.sample_and_log_prob", n, context, temperature
        )
        if z is None:
            x = self._empty(batch_shape, self.event_shape, None)
            return x, self._empty(batch_shape, torch.Size(), x)
        x, log_abs_det = self.bijector.inverse(z, flat_context)
        log_prob = self.base.log_prob(z, flat_context) - _to_batch(
            log_abs_det, z, self.latent_shape
        )
        return x.reshape(batch_shape + self.event_shape), log_prob.reshape(batch_shape)

    # --- latent structure -----------------------------------------------------------------------
    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Event shapes of the pieces of the latent: per level for a multi-scale model."""
        return latent_shapes(self.bijector, self.event_shape)

    def unflatten(self, z: Tensor) -> list[Tensor]:
        """Split a flat latent ``(*batch, D)`` into its pieces, each reshaped to its event shape.

        For a multi-scale model (Glow) these are the factored-out latents of each level, then the
        top. A latent that is not flat is returned as its only piece.
        """
        shapes = self.latent_shapes()
        if len(self.latent_shape) != 1:
            return [z]
        check_event_shape("Flow.unflatten", z, tuple(self.latent_shape), "latent")
        sizes = [math.prod(shape) for shape in shapes]
        batch_shape = z.shape[:-1]
        pieces = torch.split(z, sizes, dim=-1)
        return [piece.reshape(batch_shape + shape) for piece, shape in zip(pieces, shapes)]

    def flatten(self, pieces: Sequence[Tensor]) -> Tensor:
        """Inverse of :meth:`unflatten`: concatenate the pieces back into one flat latent."""
        shapes = self.latent_shapes()
        if len(pieces) != len(shapes):
            raise ValueError(f"Flow.flatten expects {len(shapes)} pieces, got {len(pieces)}")
        flat = []
        for piece, shape in zip(pieces, shapes):
            check_event_shape("Flow.flatten", piece, shape, "piece")
            flat.append(piece.flatten(piece.dim() - len(shape)))
        return torch.cat(flat, dim=-1)

    # --- hooks for training and inference --------------------------------------------------------
    def auxiliary_loss(self, z: Tensor, context: Tensor | None) -> AuxiliaryLoss | None:
        """Hook: a term the trainer adds to the objective beyond the negative log-likelihood.

        Called with the latent ``z`` and context of each training batch (after
        :meth:`latent_and_log_prob`). The default adds nothing; Glow's class-conditional preset
        returns its classifier's cross-entropy.
        """
        return None

    def training_loss(self, x: Tensor, context: Tensor | None) -> TrainingLoss | None:
        """Hook: the loss of a training batch, in place of the negative log-likelihood.

        Called by the trainer with each training batch (data ``x`` and context) before anything
        else; when it returns a :class:`TrainingLoss`, that is the step's loss and neither
        :meth:`latent_and_log_prob` nor :meth:`auxiliary_loss` is called. The default (None)
        trains by maximum likelihood. A continuous flow returns its flow-matching loss (no ODE
        solved), or its likelihood with RNODE's penalties from one solve
        (:class:`~flowkit.presets.CNFFlow`). Test and validation values are always
        :meth:`log_prob`'s.
        """
        return None

    @property
    def training_noise_std(self) -> float | None:
        r"""Hook: the Gaussian noise (standard deviation) this model is trained with, if it owns it.

        None (the default) leaves training noise to ``TrainConfig.noise_std``. A model that
        removes its training noise when it samples (TarFlow's denoising step) returns the
        :math:`\sigma` it removes; the trainer then adds exactly that noise, so the two cannot
        disagree.
        """
        return None

    @property
    def training_label_dropout(self) -> float | None:
        r"""Hook: the probability of training an example's class label as the null class.

        None (the default) trains every label as given. A class-conditional model that learns
        its unconditional self for classifier-free guidance (TarFlow) returns its probability
        :math:`p`; the trainer then replaces each training example's label by -1 (the null class)
        with probability :math:`p`, drawn once per example from the training generator.
        """
        return None

    def for_inference(self) -> Flow:
        """Hook: this flow prepared for evaluation and sampling (no training afterwards).

        The default returns the flow itself; Glow's preset returns a copy with every ActNorm folded
        into its neighbouring linear map, which computes the same function faster.
        """
        return self

    def clear_caches(self) -> None:
        """Forget the weights that the bijectors derived from their parameters and cached.

        Linear maps cache their weight, its inverse and its log-determinant outside autograd
        (:class:`~flowkit.bijectors.cache.ParameterCache`) and recompute them when a parameter's
        version changes: optimizer steps, ``load_state_dict`` and ``.to()`` are seen. A write
        through ``.data`` is not, such as the broadcast of rank 0's parameters when
        ``DistributedDataParallel`` wraps the model; call this after one. The caches refill at the
        next evaluation.

        Example:
            >>> from flowkit.bijectors import InvertibleConv1x1
            >>> from flowkit.distributions import StandardNormal
            >>> conv = InvertibleConv1x1(2, lu=True)
            >>> flow = Flow(StandardNormal((2, 1, 1)), conv)
            >>> with torch.no_grad():
            ...     _, log_det = conv.weight_and_log_det()
            ...     _ = conv.log_s.data.add_(1.0)  # unseen by the version counter
            ...     flow.clear_caches()
            ...     _, fresh = conv.weight_and_log_det()
            >>> round(float(fresh - log_det), 4)
            2.0
        """
        clear_caches(self)

    # --- torch.distributions view ---------------------------------------------------------------
    def distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """This flow (at a fixed context) as a ``torch.distributions.Distribution``."""
        return FlowDistribution(self, context)


def _shape_of(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _to_batch(log_abs_det: Tensor, z: Tensor, latent_shape: torch.Size) -> Tensor:
    return reduce_to_batch(log_abs_det, z.dim() - len(latent_shape))


class FlowDistribution(TorchDistribution):
    """A :class:`Flow` at a fixed context as a ``torch.distributions.Distribution``.

    ``batch_shape`` is the context's batch shape (empty when unconditional), ``event_shape`` the
    flow's. ``rsample`` is differentiable; ``sample`` runs without autograd; ``log_prob`` accepts
    values with extra leading sample dimensions.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> dist = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1)).distribution()
        >>> dist.log_prob(dist.sample((4,))).shape
        torch.Size([4])
    """

    has_rsample = True
    arg_constraints: dict = {}

    def __init__(self, flow: Flow, context: Tensor | None = None) -> None:
        self.flow = flow
        self.context = context
        super().__init__(
            batch_shape=flow._context_batch(context),
            event_shape=flow.event_shape,
            validate_args=False,
        )

    @property
    def support(self) -> constraints.Constraint:
        """The bijector's domain, extended to the flow's whole event."""
        domain = self.flow.bijector.domain
        missing = len(self.event_shape) - domain.event_dim
        return constraints.independent(domain, missing) if missing > 0 else domain

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        """Draw samples of shape ``sample_shape + batch_shape + event_shape``, differentiably."""
        return self.flow.sample(torch.Size(sample_shape), self.context)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        """Draw samples as :meth:`rsample` does, without recording autograd history."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of ``value`` under the flow at this distribution's context."""
        return self.flow.log_prob(value, self.context)
