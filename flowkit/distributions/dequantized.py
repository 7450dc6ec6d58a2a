"""Dequantized: a flow over continuous images as a distribution over integer images."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_int
from flowkit._tensors import check_event_shape, validation_enabled
from flowkit.bijectors.base import Bijector
from flowkit.bijectors.cache import clear_caches
from flowkit.distributions._inputs import check_matches_module, module_dtype_device
from flowkit.distributions.base import SampleShape
from flowkit.distributions.flow import AuxiliaryLoss, Flow

__all__ = ["MAX_BITS", "Dequantized", "VariationalDequantizer", "check_bits", "uniform_noise"]

# Uniform noise lies on a grid of 2**-24 in the model's space [-1/2, 1/2), float32's resolution in
# [1/2, 1): every dequantized value is then exact in float32 and floor((y + 1/2) * 2**n) gives the
# integer back. flowkit.data.to_model_input draws the same grid from the same random stream.
_NOISE_BITS = 24
# Up to 16 bits per value (16-bit images), which leaves 8 bits of noise per bin on that grid.
MAX_BITS = 16


def check_bits(owner: str, n_bits: object, *, image_bits: int = MAX_BITS) -> int:
    """The one check of a number of bits per value: an int from 1 to ``MAX_BITS``.

    Args:
        owner: Who asks, for the message.
        n_bits: The value to check.
        image_bits: The depth of the images it will describe, when known (8 for uint8 images),
            which narrows the range.

    Raises:
        TypeError: Not an int.
        ValueError: Outside the range.
    """
    return check_int(owner, "n_bits", n_bits, 1, min(image_bits, MAX_BITS))


def uniform_noise(
    shape: Sequence[int],
    n_bits: int = 8,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    centered: bool = False,
) -> Tensor:
    r"""Uniform dequantization noise in :math:`[0, 1)` on a grid of :math:`2^{n - 24}`.

    The draw is ``torch.randint(0, 2**(24 - n), shape)`` times :math:`2^{n - 24}`: the same random
    stream and the same values as :func:`flowkit.data.to_model_input`'s noise, so that
    ``(x + noise) / 2**n - 1/2`` equals ``to_model_input`` bit for bit, and every such value is
    exact in float32. ``centered`` adds half a grid step, putting the noise in the open interval
    :math:`(0, 1)`, where a variational dequantizer's logit is finite.

    Args:
        shape: Shape of the noise (that of the integer images).
        n_bits: Bits per value of the images, 1 to 16.
        generator: Random generator (on ``device``), for reproducibility.
        device: Device of the noise.
        dtype: Floating dtype of the noise.
        centered: Draw the centres of the grid's cells instead of their lower ends.

    Example:
        >>> noise = uniform_noise((2, 3), 8, generator=torch.Generator().manual_seed(0))
        >>> bool(((noise >= 0) & (noise < 1)).all())
        True
    """
    n_bits = check_bits("uniform_noise", n_bits)
    shift = _NOISE_BITS - n_bits
    grid = torch.randint(
        0, 2**shift, tuple(shape), generator=generator, dtype=torch.int32, device=device
    )
    noise = grid.to(dtype)
    if centered:
        noise = noise.add_(0.5)
    return noise.mul_(2.0**-shift)


def _sum_event(value: Tensor) -> Tensor:
    """Sum over everything but the first (batch) dimension."""
    return value.flatten(1).sum(-1)


class VariationalDequantizer(nn.Module):
    r"""A learned dequantization density :math:`q(u \mid x)` on the open unit cube (Flow++).

    Uniform noise :math:`\epsilon \sim \mathcal{U}(0, 1)^D` becomes a logistic variable
    :math:`s = \sigma^{-1}(\epsilon)`, which the bijector maps to :math:`s' = f(s; h)` given the
    features :math:`h` of the image; :math:`u = \sigma(s')`. By the change of variables (the
    uniform noise has log-density 0)

    .. math::

        \log q(u \mid x) = -\log\Big|\frac{ds}{d\epsilon}\Big|
            - \log\Big|\det \frac{\partial s'}{\partial s}\Big|
            - \log\Big|\frac{du}{ds'}\Big|,

    with :math:`\log|ds/d\epsilon| = -\log\epsilon - \log(1 - \epsilon)` and
    :math:`\log|du/ds'| = \log\sigma(s') + \log\sigma(-s')`, summed over the event.

    Args:
        bijector: :math:`f`, mapping ``s`` (shaped like the image) with the features as its
            context, e.g. conditional couplings with
            :class:`~flowkit.bijectors.LogisticMixtureCDF` maps.
        features: Network computing :math:`h` from the image scaled to :math:`[-1/2, 1/2)`; None
            passes the scaled image itself.

    Shapes:
        ``noise``, ``image``: ``(N, *event)``; ``u`` the same; ``log_q``: ``(N,)``.

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++ (2019), section 3.1.
    """

    def __init__(self, bijector: Bijector, features: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(bijector, Bijector):
            raise TypeError(
                f"VariationalDequantizer expects a Bijector, got {type(bijector).__name__}"
            )
        if features is not None and not isinstance(features, nn.Module):
            raise TypeError(
                "VariationalDequantizer expects features as an nn.Module or None, got "
                f"{type(features).__name__}"
            )
        self.bijector = bijector
        self.features = features

    def forward(self, noise: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``noise`` in ``(0, 1)`` to ``u`` given the scaled ``image``; return ``u, log_q``."""
        context = image if self.features is None else self.features(image)
        log_noise, log_complement = torch.log(noise), torch.log1p(-noise)
        s, log_abs_det = self.bijector(log_noise - log_complement, context)
        u = torch.sigmoid(s)
        log_du_ds = F.logsigmoid(s) + F.logsigmoid(-s)
        log_q = _sum_event(log_noise + log_complement - log_du_ds) - log_abs_det
        return u, log_q


class Dequantized(nn.Module):
    r"""A flow over :math:`[-1/2, 1/2)^D` as a distribution over integer images in :math:`[0, 2^n)`.

    An integer image :math:`x` becomes :math:`y = (x + u) / 2^n - 1/2` with noise
    :math:`u \in [0, 1)^D`: uniform (:math:`\log q = 0`), or from a
    :class:`VariationalDequantizer` :math:`q(u \mid x)`. The discrete probability is
    :math:`P(x) = \int_{[0,1)^D} p(y)\, 2^{-nD}\, du` (the bin of :math:`x` has volume
    :math:`2^{-nD}` in :math:`y`), so

    .. math::

        \log P(x) \ge \mathbb{E}_{u \sim q}\big[\log p(y) - nD \log 2 - \log q(u \mid x)\big],

    and :meth:`log_prob` returns this bound from one draw, or with ``num_samples`` :math:`K > 1`
    the importance-weighted bound :math:`\log \frac1K \sum_k w_k` with
    :math:`\log w_k = \log p(y_k) - nD \log 2 - \log q(u_k \mid x)`, which is tighter in
    expectation as :math:`K` grows. Because :math:`\sum_x P(x) \le 1`, bits per dimension of
    different models (and of models with different dequantizers) compare fairly.

    With uniform noise, :math:`y` is built exactly as :func:`flowkit.data.to_model_input` builds
    it (same formula, same order of operations, noise from :func:`uniform_noise`), so bits per
    dimension equal those of the flow on ``to_model_input``'s output.

    This model is the one home of the discrete likelihood: the number of bits, the noise
    (:meth:`noise`), the bin constant, the bound and its importance-weighted form, and the
    conversion to bits per dimension (:meth:`to_bits_per_dim`). Trainers, evaluation and
    benchmarks read them from here. A flow that works on another range (TarFlow's official
    :math:`[-1, 1]`) scales :math:`y` inside its own bijector, so the scaling's log-determinant is
    part of :math:`\log p(y)` and the bound stays one over the same integer images.

    Args:
        flow: The flow over :math:`y`; its event shape is that of the images.
        n_bits: Bits per value :math:`n`, 1 to 16 (the one check of this setting).
        dequantizer: A learned :math:`q(u \mid x)`, or None for uniform dequantization.

    Attributes:
        event_shape: The images' shape, ``flow.event_shape``.
        context_shape: The flow's (None when unconditional).
        num_classes: The flow's (None unless class-conditional).

    Inputs are integer tensors of any integer dtype (``uint8``, ``int64``) of shape
    ``(*batch, *event_shape)`` on the flow's device; their values are checked to lie in
    :math:`[0, 2^n)` while validation is on (:func:`flowkit.set_validation`).

    References:
        Theis, van den Oord & Bethge, A note on the evaluation of generative models (2016);
        Ho, Chen, Srinivas, Duan & Abbeel, Flow++ (2019).

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> flow = Flow(StandardNormal((1, 2, 2)), Affine(shape=(1, 2, 2), event_rank=3))
        >>> model = Dequantized(flow, n_bits=2)
        >>> images = torch.randint(0, 4, (5, 1, 2, 2))
        >>> model.bits_per_dim(images).shape
        torch.Size([5])
        >>> model.sample(3).shape
        torch.Size([3, 1, 2, 2])
    """

    dequantizer: VariationalDequantizer | None

    def __init__(
        self, flow: Flow, n_bits: int = 8, dequantizer: VariationalDequantizer | None = None
    ) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(f"Dequantized expects a Flow, got {type(flow).__name__}")
        if dequantizer is not None and not isinstance(dequantizer, VariationalDequantizer):
            raise TypeError(
                "Dequantized expects a VariationalDequantizer or None as dequantizer, got "
                f"{type(dequantizer).__name__}"
            )
        self.n_bits = check_bits("Dequantized", n_bits)
        # Registration order fixes the parameters' order, which optimizer checkpoints rely on.
        self.flow = flow
        self.dequantizer = dequantizer
        self.event_shape = flow.event_shape
        self.num_dims = math.prod(self.event_shape)

    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """The flow's context shape (None when unconditional)."""
        return self.flow.context_shape

    @property
    def num_classes(self) -> int | None:
        """The flow's number of classes (None unless class-conditional)."""
        return self.flow.num_classes

    # --- input handling -------------------------------------------------------------------------
    def _dtype_device(self) -> tuple[torch.dtype, torch.device | None]:
        dtype, device = module_dtype_device(self)
        return dtype or torch.get_default_dtype(), device

    def _check_images(self, owner: str, x: Tensor) -> torch.Size:
        """Check an integer image batch; return its batch shape."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{owner} expects images as a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(
                f"{owner} expects images of an integer dtype (uint8, int64, ...) with values in "
                f"[0, {2**self.n_bits}), got dtype {x.dtype}"
            )
        check_matches_module(owner, x, None, self._dtype_device()[1], "images", "model")
        check_event_shape(owner, x, tuple(self.event_shape), "images")
        # uint8 with 8 bits cannot leave the range: no need to read the values.
        in_range_by_type = x.dtype == torch.uint8 and self.n_bits == 8
        if validation_enabled() and x.numel() and not in_range_by_type:
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= 2**self.n_bits:
                raise ValueError(
                    f"{owner} expects images with values in [0, {2**self.n_bits}) "
                    f"(n_bits={self.n_bits}), got values from {low} to {high}"
                )
        return x.shape[: x.dim() - len(self.event_shape)]

    def _check_noise(self, owner: str, noise: Tensor, x: Tensor) -> None:
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            got = noise.dtype if isinstance(noise, Tensor) else type(noise).__name__
            raise TypeError(f"{owner} expects noise as a floating-point tensor, got {got}")
        if noise.shape != x.shape:
            raise ValueError(
                f"{owner} expects noise of the images' shape {tuple(x.shape)}, got "
                f"{tuple(noise.shape)}"
            )
        check_matches_module(owner, noise, None, x.device, "noise", "images")
        if validation_enabled() and noise.numel():
            # The variational map takes the logit of the noise, which is infinite at 0.
            open_low = self.dequantizer is not None
            low, high = float(noise.min()), float(noise.max())
            if high >= 1 or low < 0 or (open_low and low == 0):
                interval = "(0, 1)" if open_low else "[0, 1)"
                raise ValueError(
                    f"{owner} expects noise with values in {interval}, got values from {low} to "
                    f"{high}"
                )

    # --- the data's side ------------------------------------------------------------------------
    def noise(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Dequantization noise for images of ``shape``, as :meth:`dequantize` draws it.

        :func:`uniform_noise` for this model's bits, centred (in the open interval) when a
        variational dequantizer takes its logit; float32 on ``device``.
        """
        return uniform_noise(
            shape,
            self.n_bits,
            generator=generator,
            device=device,
            centered=self.dequantizer is not None,
        )

    def levels(self, images: Tensor) -> Tensor:
        r"""8-bit images (uint8) as this model's integers: :math:`\lfloor x / 2^{8 - n} \rfloor`.

        Keeps the ``n`` most significant bits, as :func:`flowkit.data.reduce_bits`; the identity
        for 8 bits.

        Raises:
            TypeError: The images are not uint8.
            ValueError: The model has more than 8 bits, which 8-bit images cannot fill.
        """
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(f"Dequantized.levels expects uint8 images, got {got}")
        if self.n_bits > 8:
            raise ValueError(
                f"Dequantized.levels: the model has n_bits={self.n_bits} but 8-bit (uint8) images "
                "hold 8; give the model at most 8 bits for such data"
            )
        return images >> (8 - self.n_bits)

    def to_uint8(self, levels: Tensor) -> Tensor:
        """This model's integer images as 8-bit pixel values (bins spread over 0..255), to view."""
        shift = 8 - self.n_bits
        spread = levels << shift if shift >= 0 else levels >> -shift
        return spread.clamp(0, 255).to(torch.uint8)

    def bin_centres(self, levels: Tensor) -> Tensor:
        r"""The centre of each integer's bin in the flow's space: :math:`(x + 1/2) / 2^n - 1/2`.

        A fixed encoding of images (no noise), for latents, interpolation and manipulation; in
        the flow's dtype.
        """
        return (levels.to(self._dtype_device()[0]) + 0.5) / 2**self.n_bits - 0.5

    def quantize(self, y: Tensor) -> Tensor:
        r"""The integer image of continuous :math:`y`: :math:`\lfloor (y + 1/2)\, 2^n \rfloor`.

        Values outside :math:`[-1/2, 1/2)` (samples) are clipped to :math:`[0, 2^n)`; int64.
        """
        bins = 2**self.n_bits
        return torch.floor((y + 0.5) * bins).clamp_(0, bins - 1).to(torch.int64)

    def to_bits_per_dim(self, log_prob: Tensor) -> Tensor:
        r"""A bound on :math:`\log P(x)` (nats) in bits per dimension: :math:`-\log P / (D \ln 2)`.

        The one conversion: training, evaluation and :meth:`bits_per_dim` all go through it.
        """
        return -log_prob / (self.num_dims * math.log(2.0))

    # --- density --------------------------------------------------------------------------------
    def dequantize(
        self,
        x: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""Continuous :math:`y = (x + u) / 2^n - 1/2` and :math:`\log q(u \mid x)` of the images.

        Args:
            x: Integer images, shape ``(*batch, *event_shape)``.
            noise: Uniform noise in :math:`[0, 1)` of ``x``'s shape (in :math:`(0, 1)` for a
                variational dequantizer), or None to draw it with :func:`uniform_noise` (centred
                for a variational dequantizer).
            generator: Random generator for the draw (on the images' device).

        Returns:
            ``y`` in the flow's dtype, shaped like ``x``, and ``log_q`` of shape ``batch`` (zero
            for uniform dequantization).
        """
        owner = "Dequantized.dequantize"
        batch_shape = self._check_images(owner, x)
        dtype = self._dtype_device()[0]
        if noise is None:
            noise = uniform_noise(
                x.shape,
                self.n_bits,
                generator=generator,
                device=x.device,
                dtype=dtype,
                centered=self.dequantizer is not None,
            )
        else:
            self._check_noise(owner, noise, x)
            noise = noise.to(dtype)
        levels = x.to(dtype)
        bins = 2**self.n_bits
        if self.dequantizer is None or not batch_shape.numel():
            u, log_q = noise, noise.new_zeros(batch_shape)
        else:
            flat_shape = (-1,) + tuple(self.event_shape)
            u, log_q = self.dequantizer(
                noise.reshape(flat_shape), (levels / bins - 0.5).reshape(flat_shape)
            )
            u, log_q = u.reshape(x.shape), log_q.reshape(batch_shape)
        # The order of to_model_input's exact float32 arithmetic: (k + u) / 2**n - 1/2.
        return (levels + u) / bins - 0.5, log_q

    def latent_and_log_prob(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        perturbation: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The flow's latent and the one-draw lower bound on :math:`\log P(x)`, in nats.

        Args:
            x: Integer images, shape ``(*batch, *event_shape)``.
            context: The flow's context, if it is conditional.
            noise: Dequantization noise as in :meth:`dequantize`, or None to draw it.
            generator: Random generator for the draw.
            perturbation: Gaussian training noise added to :math:`y` before the flow (TarFlow's
                training noise, :attr:`Flow.training_noise_std`); the value is then the bound of
                the noisy data, not of the images. None adds nothing.

        Returns:
            ``z`` (shape ``(*batch, *flow.latent_shape)``, for :meth:`auxiliary_loss`) and
            :math:`\log p(y) - nD \log 2 - \log q(u \mid x)` of shape ``batch``.
        """
        y, log_q = self.dequantize(x, noise, generator)
        if perturbation is not None:
            y = y + perturbation.to(y.dtype)
        z, log_density = self.flow.latent_and_log_prob(y, context)
        # The bin of x has volume 2^(-nD) in y.
        return z, log_density - self.num_dims * self.n_bits * math.log(2.0) - log_q

    def log_prob(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: Sequence[Tensor] | None = None,
    ) -> Tensor:
        r"""Lower bound on :math:`\log P(x)` in nats, shape ``batch``.

        Args:
            x: Integer images, shape ``(*batch, *event_shape)``.
            context: The flow's context, if it is conditional.
            num_samples: Draws :math:`K` of the noise; with :math:`K > 1` the importance-weighted
                bound :math:`\log \frac1K \sum_k w_k` (one pass of the flow per draw), summed in
                float64.
            generator: Random generator for the draws.
            noise: The draws themselves (fixed evaluation noise), each as in :meth:`dequantize`;
                :math:`K` is their number and ``num_samples`` must be left at 1 or equal it.
        """
        num_samples = check_int("Dequantized.log_prob", "num_samples", num_samples, 1)
        if noise is not None:
            draws: list[Tensor | None] = list(noise)
            if not draws or num_samples not in (1, len(draws)):
                raise ValueError(
                    f"Dequantized.log_prob expects at least one noise draw and num_samples 1 or "
                    f"their number, got {len(draws)} draw(s) and num_samples={num_samples}"
                )
        else:
            draws = [None] * num_samples
        log_weights = [
            self.latent_and_log_prob(x, context, noise=draw, generator=generator)[1]
            for draw in draws
        ]
        if len(log_weights) == 1:
            return log_weights[0]
        stacked = torch.stack(log_weights)
        bound = torch.logsumexp(stacked.double(), dim=0) - math.log(len(log_weights))
        return bound.to(stacked.dtype)

    def bits_per_dim(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: Sequence[Tensor] | None = None,
    ) -> Tensor:
        r"""Upper bound on :math:`-\log_2 P(x) / D`: :meth:`log_prob` in bits per dimension."""
        log_prob = self.log_prob(
            x, context, num_samples=num_samples, generator=generator, noise=noise
        )
        return self.to_bits_per_dim(log_prob)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`, so that wrappers such as DistributedDataParallel call it."""
        return self.log_prob(x, context)

    # --- sampling -------------------------------------------------------------------------------
    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        r"""Integer images :math:`\mathrm{clip}(\lfloor (y + 1/2)\, 2^n \rfloor, 0, 2^n - 1)`.

        ``y`` is drawn from the flow without autograd; arguments as :meth:`Flow.sample`.

        Returns:
            int64 tensor of shape ``(*n, *context_batch, *event_shape)``.

        Raises:
            ValueError: The flow's sample holds NaN (a diverged model), which has no integer.
        """
        with torch.no_grad():
            y = self.flow.sample(n, context, temperature)
        if validation_enabled() and y.numel() and bool(torch.isnan(y).any()):
            raise ValueError(
                f"Dequantized.sample: the flow's sample holds {int(torch.isnan(y).sum())} NaN "
                f"value(s) of {y.numel()}, which have no integer value"
            )
        return self.quantize(y)

    # --- hooks ----------------------------------------------------------------------------------
    def auxiliary_loss(self, z: Tensor, context: Tensor | None) -> AuxiliaryLoss | None:
        """The flow's :meth:`~flowkit.distributions.Flow.auxiliary_loss` hook."""
        return self.flow.auxiliary_loss(z, context)

    def record(self) -> dict[str, int]:
        """What a run stores of this likelihood beside its data, to read its images back.

        Plain values (``{"n_bits": n}``); a learned dequantizer is part of the weights instead.
        """
        return {"n_bits": self.n_bits}

    @classmethod
    def from_record(cls, flow: Flow, record: Mapping[str, Any]) -> Dequantized:
        """Uniform dequantization of ``flow`` as :meth:`record` stored it (8 bits without one)."""
        return cls(flow, record.get("n_bits", 8))

    def with_flow(self, flow: Flow) -> Dequantized:
        """This discrete likelihood (bits, dequantizer) around another flow (averaged weights)."""
        return Dequantized(flow, self.n_bits, self.dequantizer)

    def for_inference(self) -> Dequantized:
        """This model around ``flow.for_inference()``, with the same dequantizer."""
        flow = self.flow.for_inference()
        return self if flow is self.flow else self.with_flow(flow)

    def clear_caches(self) -> None:
        """Forget the derived weights cached by the flow's bijectors and the dequantizer's.

        See ``Flow.clear_caches``: needed after a
        write to the parameters through ``.data``, which their version counters do not show.
        """
        clear_caches(self)

    def extra_repr(self) -> str:
        """Bits per value, for ``repr``."""
        return f"n_bits={self.n_bits}"
