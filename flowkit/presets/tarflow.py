"""TarFlow (Zhai et al. 2025): autoregressive transformer flows on image patches, from the parts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from flowkit._checks import (
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_SEED,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import (
    Affine,
    AffineMap,
    Autoregressive,
    Bijector,
    Compose,
    Patchify,
    Permute,
)
from flowkit.distributions import Distribution, Flow, StandardNormal
from flowkit.distributions.base import SampleShape
from flowkit.nn import CausalTransformer
from flowkit.presets._construction import build_seeded, check_parameter_count

__all__ = ["GUIDE_WHAT", "TarFlowConfig", "TarFlowFlow", "build_tarflow", "denoise", "tarflow"]

# A larger MLP multiple than this is a typo, not a design (transformers use 2 to 8).
MAX_EXPANSION = 64

# Channels per attention head: the official code fixes the head width at 64 for every model.
HEAD_CHANNELS = 64

# What guidance may act on, as the official sampler's ``guide_what``: "a" the log-scales, "b" the
# shifts. AffineMap's parameters are (shift, raw scale), so these are its parameter indices.
GUIDE_WHAT: dict[str, tuple[int, ...]] = {"ab": (0, 1), "a": (1,), "b": (0,)}


@dataclass(frozen=True)
class TarFlowConfig:
    """Hyper-parameters of TarFlow; defaults are the paper's ImageNet 64x64 model.

    The defaults follow the official code's ImageNet 64x64 commands (github.com/apple/ml-tarflow,
    README): patches of 2x2, 8 blocks of 8 transformer layers of width 768, attention heads of 64
    channels (12 heads), MLPs four times as wide.

    Attributes:
        input_shape: Image shape ``(C, H, W)``; ``H`` and ``W`` must be divisible by
            ``patch_size``.
        patch_size: Side ``p`` of the square patches; the sequence has ``T = HW / p^2`` positions
            of ``d = C p^2`` values.
        channels: Width of the transformers.
        blocks: Autoregressive blocks; the sequence is reversed between consecutive blocks.
        layers_per_block: Attention + MLP layers of each block's transformer.
        heads: Attention heads (``channels`` must be divisible by it). None (the default):
            heads of ``HEAD_CHANNELS`` = 64 channels, ``channels // 64``, as the official code;
            where 64 does not divide ``channels``, the most heads that divide it and are at
            least 64 channels wide (one head below 128 channels).
        expansion: Hidden width of the MLPs in multiples of ``channels``.
        num_classes: Classes of a class-conditional model (labels as context), or None.
        label_dropout: Probability of training an example's label as the null class, for
            classifier-free guidance (the official ``--drop_label``, 0.1): drawn once per example
            for all blocks, by the trainer (see :attr:`TarFlowFlow.training_label_dropout`).
        noise_std: Standard deviation of the Gaussian noise the model is trained with, in the
            units of the model's range (:attr:`data_scale`; the official 0.05 in
            :math:`[-1, 1]`); samples are denoised with it (0 turns denoising off).
        data_scale: The flow's first step multiplies flowkit's image range
            :math:`[-1/2, 1/2]` by this: 2 (the default) gives the official :math:`[-1, 1]`,
            1 keeps flowkit's range (the models before this setting). Its log-determinant
            ``D log(data_scale)`` is part of the density, so bits/dim stay those of the same
            integer images; TarFlow has no data-fitted normalisation and starts as the identity,
            so the range changes its training.
        seed: Seed of the initial weights (None draws from torch's global generator).

    A stored config without ``data_scale`` (written before it existed) is read with
    :attr:`STORED_DEFAULTS`: flowkit's range, the model it was trained as.
    """

    # The range of configs stored before data_scale existed.
    STORED_DEFAULTS: ClassVar[Mapping[str, Any]] = MappingProxyType({"data_scale": 1.0})

    input_shape: tuple[int, int, int] = (3, 64, 64)
    patch_size: int = 2
    channels: int = 768
    blocks: int = 8
    layers_per_block: int = 8
    heads: int | None = None
    expansion: int = 4
    num_classes: int | None = None
    label_dropout: float = 0.1
    noise_std: float = 0.0
    data_scale: float = 2.0
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "TarFlowConfig"
        shape = check_shape(
            owner,
            "input_shape",
            self.input_shape,
            rank=3,
            maximum=MAX_IMAGE_SIZE,
            labels="(C, H, W)",
        )
        # A tuple whatever sequence came (a list from a JSON checkpoint), so that configs compare.
        object.__setattr__(self, "input_shape", shape)
        check_int(owner, "patch_size", self.patch_size, 1, MAX_IMAGE_SIZE)
        check_int(owner, "channels", self.channels, 1, MAX_WIDTH)
        check_int(owner, "blocks", self.blocks, 1, MAX_STEPS)
        check_int(owner, "layers_per_block", self.layers_per_block, 1, MAX_STEPS)
        # Resolved once, so that configs (and the checkpoints recording them) compare by value.
        heads = check_int(owner, "heads", _heads(self.channels, self.heads), 1, MAX_WIDTH)
        object.__setattr__(self, "heads", heads)
        check_int(owner, "expansion", self.expansion, 1, MAX_EXPANSION)
        check_int(owner, "num_classes", self.num_classes, 2, MAX_CLASSES, optional=True)
        check_float(owner, "label_dropout", self.label_dropout, 0.0, 1.0, exclusive_maximum=True)
        check_float(owner, "noise_std", self.noise_std, 0.0)
        check_float(owner, "data_scale", self.data_scale, 0.0, exclusive_minimum=True)
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        if self.channels % heads:
            raise ValueError(
                f"{owner} expects channels divisible by heads, got channels={self.channels} and "
                f"heads={self.heads}"
            )
        _, height, width = shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"{owner} expects height and width divisible by patch_size={self.patch_size}, "
                f"got {height}x{width}"
            )
        check_parameter_count(
            owner,
            _parameter_count(self),
            f"blocks={self.blocks}, layers_per_block={self.layers_per_block}, "
            f"channels={self.channels}, input_shape={shape}, patch_size={self.patch_size}",
        )

    @property
    def sequence_shape(self) -> tuple[int, int]:
        """``(T, d)``: the number of patches and the values in each."""
        channels, height, width = self.input_shape
        p = self.patch_size
        return (height // p) * (width // p), channels * p * p


def _heads(channels: int, heads: int | None) -> int:
    """``heads``, or (None) the most heads of 64 channels or more that divide ``channels``."""
    if heads is not None:
        return heads
    most = max(1, channels // HEAD_CHANNELS)
    return next(count for count in range(most, 0, -1) if channels % count == 0)


def _parameter_count(config: TarFlowConfig) -> int:
    """The exact number of parameters of the model ``config`` describes."""
    length, features = config.sequence_shape
    c, e = config.channels, config.expansion
    layer = 2 * c + 3 * c * (c + 1) + c * (c + 1) + 2 * c + e * c * (c + 1) + c * (e * c + 1)
    block = (features + 1) * c + length * c + (config.num_classes or 0) * c
    block += config.layers_per_block * layer + 2 * features * (c + 1)
    return config.blocks * block


def tarflow(
    input_shape: Sequence[int] = (3, 64, 64),
    patch_size: int = 2,
    *,
    channels: int = 768,
    blocks: int = 8,
    layers_per_block: int = 8,
    heads: int | None = None,
    expansion: int = 4,
    num_classes: int | None = None,
    label_dropout: float = 0.1,
    noise_std: float = 0.0,
    data_scale: float = 2.0,
    seed: int | None = None,
) -> TarFlowFlow:
    r"""TarFlow: a stack of causal-transformer autoregressive flows over the patches of an image.

    The bijector is: a fixed :class:`~flowkit.bijectors.Affine` scaling by ``data_scale`` (the
    official range :math:`[-1, 1]` by default) and :class:`~flowkit.bijectors.Patchify` (image to
    a sequence of ``T`` patches of ``d`` values); then ``blocks`` times [an
    :class:`~flowkit.bijectors.Autoregressive` with a :class:`~flowkit.nn.CausalTransformer`
    conditioner and the affine map :math:`z_t = (x_t + \mu_t) e^{\alpha_t}` with
    :math:`(\mu_t, \alpha_t)` computed from :math:`x_{<t}`, followed by a reversal of the
    sequence, so the next block runs in the other direction]. The base is :math:`N(0, I)` over
    ``(T, d)``. Every block starts as the identity (zero-initialised output layers).

    This is the paper's map (:math:`z_t = (x_t - \mu_t) e^{-\alpha_t}`, the sign of the network's
    outputs aside); the official code undoes each block's reversal inside the block, which only
    reorders the latent (with an even number of blocks the two latents agree).

    Args are the fields of :class:`TarFlowConfig`, where each default is documented.

    Returns:
        A :class:`TarFlowFlow` over images of shape ``input_shape`` with values in
        :math:`[-1/2, 1/2]`. Class-conditional models take integer labels as context.

    References:
        Zhai, Zhang, Nakkiran, Berthelot, Gu, Zheng, Chen, Bautista, Jaitly & Susskind,
        Normalizing Flows are Capable Generative Models (ICML 2025); github.com/apple/ml-tarflow.

    Example:
        >>> flow = tarflow((1, 8, 8), 4, channels=16, blocks=2, layers_per_block=1, heads=2)
        >>> flow.log_prob(torch.rand(3, 1, 8, 8) - 0.5).shape
        torch.Size([3])
    """
    config = TarFlowConfig(
        input_shape=input_shape,  # type: ignore[arg-type]
        patch_size=patch_size,
        channels=channels,
        blocks=blocks,
        layers_per_block=layers_per_block,
        heads=heads,
        expansion=expansion,
        num_classes=num_classes,
        label_dropout=label_dropout,
        noise_std=noise_std,
        data_scale=data_scale,
        seed=seed,
    )
    return build_tarflow(config)


def build_tarflow(config: TarFlowConfig) -> TarFlowFlow:
    """Build the :class:`TarFlowFlow` described by ``config`` (see :func:`tarflow`).

    With ``config.seed`` set, every initial weight is drawn from that seed (torch's global random
    state is saved and restored around the construction).
    """
    bijector = build_seeded(config.seed, lambda _: _bijector(config))
    return TarFlowFlow(StandardNormal(config.sequence_shape), bijector, config)


def _bijector(config: TarFlowConfig) -> Bijector:
    length, features = config.sequence_shape
    first: Bijector = Patchify(config.patch_size, image_width=config.input_shape[2])
    if config.data_scale != 1:
        # One step with the patching, so that the blocks keep their places in the state dict.
        scale = Affine(scale=config.data_scale, learnable=False, event_rank=3)
        first = Compose([scale, first])
    parts: list[Bijector] = [first]
    for _ in range(config.blocks):
        conditioner = CausalTransformer(
            features,
            length,
            2,
            channels=config.channels,
            layers=config.layers_per_block,
            heads=_heads(config.channels, config.heads),
            expansion=config.expansion,
            num_classes=config.num_classes,
        )
        parts.append(
            Autoregressive(conditioner, AffineMap("exp", shift_first=True), (length, features))
        )
        parts.append(Permute.reverse(length, event_rank=2))
    return Compose(parts)


class TarFlowFlow(Flow):
    """The :class:`~flowkit.Flow` of :func:`tarflow`: sampling with guidance and denoising.

    :meth:`sample` takes the official sampler's options beyond :meth:`Flow.sample`: classifier-free
    ``guidance``, ``annealed_guidance``, ``guide_what`` and ``attention_temperature``; ``cache``
    (the key/value cache of the inverse, on by default) and ``denoise`` (one score-based denoising
    step with the training noise ``config.noise_std``, on by default when that is positive).
    :meth:`decoding` sets the same options for any decoding in a ``with`` block.

    Attributes:
        config: The :class:`TarFlowConfig` the model was built from.
    """

    config: TarFlowConfig

    def __init__(self, base: Distribution, bijector: Bijector, config: TarFlowConfig) -> None:
        super().__init__(base, bijector, num_classes=config.num_classes)
        self.config = config

    @property
    def noise_std(self) -> float:
        """The training noise's standard deviation where it is added: in the flow's input range.

        That is flowkit's :math:`[-1/2, 1/2]`, so ``config.noise_std / config.data_scale``: the
        same noise as ``config.noise_std`` in the model's own range. :meth:`sample` removes it.
        """
        return self.config.noise_std / self.config.data_scale

    @property
    def training_noise_std(self) -> float:
        """:attr:`noise_std`: the model owns its training noise, since it denoises with it."""
        return self.noise_std

    @property
    def training_label_dropout(self) -> float | None:
        """``config.label_dropout`` for a class-conditional model (None without classes).

        The trainer replaces each training example's label by the null class with this
        probability, once for all blocks, so that the model learns its unconditional self as
        the official training does (a training loop of one's own does the same: labels of -1).
        """
        return None if self.num_classes is None else self.config.label_dropout

    @contextlib.contextmanager
    def decoding(
        self,
        guidance: float = 0.0,
        *,
        annealed_guidance: bool = False,
        guide_what: str = "ab",
        attention_temperature: float = 1.0,
        cache: bool = True,
    ) -> Iterator[None]:
        r"""Within the block, decoding (the inverse) uses these options; restored on exit.

        With guidance, every conditioner mixes conditional and unconditional parameters: each
        decoding step uses :math:`\theta_c + w_t(\theta_c - \theta_u)` (see
        :class:`~flowkit.nn.CausalTransformer`). The forward map is changed the same way, so use
        a positive weight only around decoding: the density of a guided map is not the model's.

        Args:
            guidance: Guidance weight :math:`w \ge 0` (0 is plain conditional sampling). A model
                without classes can be guided only with ``attention_temperature`` other than 1,
                against its own tempered-attention version (the official unconditional guidance).
            annealed_guidance: Ramp the weight over each block's positions,
                :math:`w_t = w\, t / (T - 1)`, as the official evaluation does.
            guide_what: Which parameters are guided: ``"ab"`` both, ``"a"`` the log-scales,
                ``"b"`` the shifts (the official ``guide_what``).
            attention_temperature: Temperature :math:`\tau > 0` of the unconditional pass's
                attention (its logits are divided by :math:`\tau`; the official ``attn_temp``).
                It acts only with guidance.
            cache: Decode with the transformers' key/value caches (one token's work per
                position); False reruns the whole sequence per position, for comparison.
        """
        settings = self._guidance_settings(
            guidance, annealed_guidance, guide_what, attention_temperature, cache
        )
        conditioners = [m for m in self.modules() if isinstance(m, CausalTransformer)]
        blocks = [m for m in self.modules() if isinstance(m, Autoregressive)]
        previous = [{name: getattr(m, name) for name in settings} for m in conditioners]
        previous_cache = [m.incremental for m in blocks]
        for conditioner in conditioners:
            for name, value in settings.items():
                setattr(conditioner, name, value)
        for block in blocks:
            block.incremental = cache
        try:
            yield
        finally:
            for conditioner, values in zip(conditioners, previous):
                for name, value in values.items():
                    setattr(conditioner, name, value)
            for block, value in zip(blocks, previous_cache):
                block.incremental = value

    def _guidance_settings(
        self,
        guidance: float,
        annealed_guidance: bool,
        guide_what: str,
        attention_temperature: float,
        cache: bool,
    ) -> dict[str, Any]:
        """:meth:`decoding`'s options checked, as the conditioners' guidance attributes."""
        owner = "TarFlowFlow"
        weight = check_float(owner, "guidance", guidance, 0.0)
        temperature = check_float(
            owner, "attention_temperature", attention_temperature, 0.0, exclusive_minimum=True
        )
        if not isinstance(annealed_guidance, bool):
            raise TypeError(
                f"{owner} expects annealed_guidance as a bool, got {annealed_guidance!r}"
            )
        if not isinstance(cache, bool):
            raise TypeError(f"{owner} expects cache as a bool, got {cache!r}")
        if guide_what not in GUIDE_WHAT:
            raise ValueError(
                f"{owner} expects guide_what as one of {', '.join(map(repr, GUIDE_WHAT))}, got "
                f"{guide_what!r}"
            )
        if weight and self.num_classes is None and temperature == 1:
            raise ValueError(
                f"{owner}: guidance needs a class-conditional model (built with num_classes) or, "
                "for a model without classes, an attention_temperature other than 1 (it is then "
                f"guided away from its tempered-attention self); got guidance={weight} and "
                f"attention_temperature={temperature}"
            )
        parameters = None if guide_what == "ab" else GUIDE_WHAT[guide_what]
        return {
            "guidance": weight,
            "annealed_guidance": annealed_guidance,
            "guided_parameters": parameters,
            "attention_temperature": temperature,
        }

    def sample(
        self,
        n: SampleShape = None,
        context: Tensor | None = None,
        temperature: float = 1.0,
        *,
        guidance: float = 0.0,
        annealed_guidance: bool = False,
        guide_what: str = "ab",
        attention_temperature: float = 1.0,
        cache: bool = True,
        denoise: bool = True,
    ) -> Tensor:
        r"""Draw samples as :meth:`Flow.sample`, with guidance, then denoise them.

        Args:
            n: Number of samples or sample shape, as :meth:`Flow.sample`.
            context: Class labels of a class-conditional model.
            temperature: Scale of the base noise.
            guidance: Classifier-free guidance weight :math:`w \ge 0` (paper, section 2.4): each
                decoding step uses the parameters :math:`\theta_c + w(\theta_c - \theta_u)`.
                0 is plain conditional sampling.
            annealed_guidance: Ramp the weight from 0 to :math:`w` over each block's positions.
            guide_what: ``"ab"`` (both parameters), ``"a"`` (log-scales) or ``"b"`` (shifts).
            attention_temperature: Attention temperature of the unconditional pass (with
                guidance only).
            cache: Use the key/value cache (the same samples up to round-off, much faster).
            denoise: Apply :func:`denoise` with ``config.noise_std`` (nothing happens when that
                is 0).

        See :meth:`decoding` for the options in full.
        """
        with self.decoding(
            guidance,
            annealed_guidance=annealed_guidance,
            guide_what=guide_what,
            attention_temperature=attention_temperature,
            cache=cache,
        ):
            x = super().sample(n, context, temperature)
        if denoise and self.noise_std > 0:
            x = _denoise(self, x, self.noise_std, context)
        return x


def denoise(flow: Flow, x: Tensor, noise_std: float, context: Tensor | None = None) -> Tensor:
    r"""One score-based denoising step: :math:`x + \sigma^2 \nabla_x \log p(x)`.

    For a model :math:`p` of data corrupted by Gaussian noise of standard deviation
    :math:`\sigma`, this is Tweedie's formula for :math:`E[x_0 \mid x]`, the mean of the clean
    image given the noisy one. TarFlow trains on noisy images and so samples noisy ones; the
    paper removes the noise with this step, using the flow's own log-density gradient.

    Args:
        flow: The model of the noisy data.
        x: Samples (or data), shape ``(*batch, *flow.event_shape)``.
        noise_std: :math:`\sigma`, a finite number >= 0.
        context: The context of a conditional flow.

    Returns:
        The denoised tensor, shaped like ``x``, without autograd history.

    References:
        Efron, Tweedie's Formula and Selection Bias (2011); Zhai et al., TarFlow (2025), 2.3.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> gaussian = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1))
        >>> denoise(gaussian, torch.tensor([[2.0]]), 0.5)  # 2 - 0.25 * 2
        tensor([[1.5000]])
    """
    noise_std = check_float("denoise", "noise_std", noise_std, 0.0)
    return _denoise(flow, x, noise_std, context)


def _denoise(flow: Flow, x: Tensor, noise_std: float, context: Tensor | None) -> Tensor:
    point = x.detach().requires_grad_(True)
    # The score of the model itself: evaluation mode, so no label is dropped, and autograd on,
    # as sampling usually runs without it. Each module's mode is restored afterwards.
    modes = [(module, module.training) for module in flow.modules()]
    flow.eval()
    try:
        with torch.enable_grad():
            log_prob = flow.log_prob(point, context)
            (score,) = torch.autograd.grad(log_prob.sum(), point)
    finally:
        for module, training in modes:
            module.training = training
    return (x.detach() + noise_std**2 * score).detach()
