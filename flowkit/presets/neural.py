"""Neural autoregressive flows (NAF) and unconstrained monotonic neural networks (UMNN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from torch import nn

from flowkit._checks import MAX_SEED, MAX_WIDTH, MIN_SEED, check_bool, check_int, check_shape
from flowkit.bijectors import (
    Autoregressive,
    Bijector,
    Coupling,
    DeepDenseSigmoidMap,
    DeepSigmoidMap,
    ElementwiseMap,
    UMNNMap,
    channel_mask,
)
from flowkit.bijectors.autoregressive import _made_conditioner
from flowkit.distributions import Flow
from flowkit.nn import MLP
from flowkit.presets._construction import build_seeded
from flowkit.presets.vector import _assemble, _check_common

__all__ = ["NAFConfig", "UMNNConfig", "build_naf", "build_umnn", "naf", "umnn"]

TRANSFORMERS = ("dsf", "ddsf")


def _check_layout(owner: str, features: int, autoregressive: bool, residual: bool) -> None:
    if not autoregressive and features < 2:
        raise ValueError(
            f"{owner}: a coupling flow needs features >= 2 to split, got {features}; "
            "use autoregressive=True for one feature"
        )
    if residual and not autoregressive:
        raise ValueError(f"{owner}: residual blocks exist only in the autoregressive MADE")


@dataclass(frozen=True)
class NAFConfig:
    """Architecture of a neural autoregressive flow; :func:`naf` explains each field."""

    features: int
    context_features: int | None = None
    transforms: int = 3
    transformer: str = "dsf"
    sigmoids: int = 8
    layers: int = 1
    hidden_features: tuple[int, ...] = (64, 64)
    autoregressive: bool = True
    residual: bool = False
    actnorm: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        check_int("NAFConfig", "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        if self.transformer not in TRANSFORMERS:
            raise ValueError(
                f"NAFConfig expects transformer as one of {TRANSFORMERS}, got {self.transformer!r}"
            )
        check_int("NAFConfig", "sigmoids", self.sigmoids, 1, MAX_WIDTH)
        check_int("NAFConfig", "layers", self.layers, 1, 64)
        for name in ("autoregressive", "residual", "actnorm"):
            check_bool("NAFConfig", name, getattr(self, name))
        widths = _check_common(
            "NAFConfig",
            self.features,
            self.context_features,
            self.transforms,
            self.hidden_features,
            outputs_per_feature=self.make_map().params_per_element,
        )
        object.__setattr__(self, "hidden_features", widths)
        _check_layout("NAFConfig", self.features, self.autoregressive, self.residual)

    def make_map(self) -> ElementwiseMap:
        """A fresh transformer of one step."""
        if self.transformer == "dsf":
            return DeepSigmoidMap(self.sigmoids, self.layers)
        return DeepDenseSigmoidMap(self.sigmoids, self.layers)


@dataclass(frozen=True)
class UMNNConfig:
    """Architecture of a UMNN flow; :func:`umnn` explains each field.

    A stored config without ``shared_integrand`` was written before the field existed, when
    every step shared one integrand network: :attr:`STORED_DEFAULTS` rebuilds that layout.
    """

    STORED_DEFAULTS: ClassVar[Mapping[str, Any]] = MappingProxyType({"shared_integrand": True})

    features: int
    context_features: int | None = None
    transforms: int = 3
    signal: int = 8
    integrand_features: tuple[int, ...] = (32, 32)
    nodes: int = 33
    hidden_features: tuple[int, ...] = (64, 64)
    autoregressive: bool = True
    residual: bool = False
    actnorm: bool = False
    seed: int | None = None
    shared_integrand: bool = False

    def __post_init__(self) -> None:
        check_int("UMNNConfig", "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        check_int("UMNNConfig", "signal", self.signal, 1, MAX_WIDTH)
        # Beyond a few hundred nodes the quadrature is exact to rounding and only costs time.
        check_int("UMNNConfig", "nodes", self.nodes, 2, 1025)
        integrand = check_shape(
            "UMNNConfig", "integrand_features", self.integrand_features, maximum=MAX_WIDTH
        )
        object.__setattr__(self, "integrand_features", integrand)
        for name in ("shared_integrand", "autoregressive", "residual", "actnorm"):
            check_bool("UMNNConfig", name, getattr(self, name))
        widths = _check_common(
            "UMNNConfig",
            self.features,
            self.context_features,
            self.transforms,
            self.hidden_features,
            outputs_per_feature=self.signal + 1,
        )
        object.__setattr__(self, "hidden_features", widths)
        _check_layout("UMNNConfig", self.features, self.autoregressive, self.residual)

    def make_map(self) -> ElementwiseMap:
        """A fresh transformer of one step (with its own integrand networks)."""
        elements = None
        if not self.shared_integrand:
            # The transformed features: all of them in a MADE step, the second half in a coupling.
            elements = self.features if self.autoregressive else self.features - self.features // 2
        return UMNNMap(self.signal, self.integrand_features, nodes=self.nodes, elements=elements)


def _build(config: NAFConfig | UMNNConfig) -> Flow:
    features = config.features

    def make_step() -> Bijector:
        transform = config.make_map()
        count = transform.params_per_element
        if config.autoregressive:
            # Random output layers, as MAF's preset and zuko: a zero one would start every
            # sigmoid alike, and alike they would stay.
            made = _made_conditioner(
                features,
                count,
                context_features=config.context_features,
                hidden_features=config.hidden_features,
                residual=config.residual,
                order="natural",
                activation=nn.ReLU,
                identity_init=False,
            )
            return Autoregressive(made, transform, (features,))
        kept = features // 2
        network = MLP(
            kept,
            count * (features - kept),
            config.hidden_features,
            context_features=config.context_features,
            zero_init=False,
        )
        return Coupling(network, channel_mask(features, event_rank=1), transform)

    return _assemble(
        features, config.context_features, config.transforms, config.actnorm, make_step
    )


def build_naf(config: NAFConfig) -> Flow:
    """The flow described by ``config``; see :func:`naf`."""
    return build_seeded(config.seed, lambda _: _build(config))


def build_umnn(config: UMNNConfig) -> Flow:
    """The flow described by ``config``; see :func:`umnn`."""
    return build_seeded(config.seed, lambda _: _build(config))


def naf(
    features: int,
    context_features: int | None = None,
    *,
    transforms: int = 3,
    transformer: str = "dsf",
    sigmoids: int = 8,
    layers: int = 1,
    hidden_features: Sequence[int] = (64, 64),
    autoregressive: bool = True,
    residual: bool = False,
    actnorm: bool = False,
    seed: int | None = None,
) -> Flow:
    r"""Neural autoregressive flow: ``transforms`` steps of a sigmoidal transformer.

    Each step is an :class:`~flowkit.bijectors.Autoregressive` with a
    :class:`~flowkit.nn.MADE` conditioner (or, with ``autoregressive=False``, a
    :class:`~flowkit.bijectors.Coupling` whose :class:`~flowkit.nn.MLP` reads the first
    ``D // 2`` features) and, as transformer, a :class:`~flowkit.bijectors.DeepSigmoidMap`
    (``"dsf"``) or a :class:`~flowkit.bijectors.DeepDenseSigmoidMap` (``"ddsf"``). Steps are
    separated by feature reversals, optionally preceded by ActNorm; the base is
    :math:`N(0, I_D)`. Density evaluation is one pass per step; sampling inverts every transformer
    numerically (a guaranteed bracket, then safeguarded Newton), ``D`` passes per autoregressive
    step.

    Args:
        features: Data dimension ``D`` (at least 2 for couplings).
        context_features: Dimension of the conditioning vector, or None.
        transforms: Number of steps.
        transformer: ``"dsf"`` (deep sigmoidal) or ``"ddsf"`` (deep dense sigmoidal).
        sigmoids: Sigmoids per layer of the transformer (its width :math:`H`).
        layers: Layers of the transformer.
        hidden_features: Widths of each conditioner's hidden layers.
        autoregressive: MADE steps (True) or couplings (False).
        residual: Use residual blocks in the MADEs (autoregressive only).
        actnorm: Put an ActNorm (vector form) before every step.
        seed: Draw every initial weight from this seed (None: torch's global generator).

    Returns:
        The :class:`~flowkit.Flow`.

    References:
        Huang, Krueger, Lacoste & Courville, Neural Autoregressive Flows (2018).

    Example:
        >>> import torch
        >>> flow = naf(2, transforms=2, sigmoids=4, hidden_features=(16,))
        >>> flow.log_prob(torch.randn(10, 2)).shape
        torch.Size([10])
    """
    return build_naf(
        NAFConfig(
            features,
            context_features,
            transforms=transforms,
            transformer=transformer,
            sigmoids=sigmoids,
            layers=layers,
            hidden_features=hidden_features,  # type: ignore[arg-type]
            autoregressive=autoregressive,
            residual=residual,
            actnorm=actnorm,
            seed=seed,
        )
    )


def umnn(
    features: int,
    context_features: int | None = None,
    *,
    transforms: int = 3,
    signal: int = 8,
    integrand_features: Sequence[int] = (32, 32),
    nodes: int = 33,
    shared_integrand: bool = False,
    hidden_features: Sequence[int] = (64, 64),
    autoregressive: bool = True,
    residual: bool = False,
    actnorm: bool = False,
    seed: int | None = None,
) -> Flow:
    r"""UMNN flow: ``transforms`` steps whose transformer integrates a positive network.

    Each step is an :class:`~flowkit.bijectors.Autoregressive` with a
    :class:`~flowkit.nn.MADE` conditioner (or, with ``autoregressive=False``, a
    :class:`~flowkit.bijectors.Coupling` with an :class:`~flowkit.nn.MLP`) and a
    :class:`~flowkit.bijectors.UMNNMap` transformer: the conditioner gives each feature an
    embedding of ``signal`` values and an offset, and
    :math:`z_i = \int_0^{x_i} g(t; h_i)\,dt + \beta_i` by Clenshaw–Curtis quadrature with
    ``nodes`` nodes. Steps are separated by feature reversals, optionally preceded by ActNorm;
    the base is :math:`N(0, I_D)`.

    Args:
        features: Data dimension ``D`` (at least 2 for couplings).
        context_features: Dimension of the conditioning vector, or None.
        transforms: Number of steps.
        signal: Size of each feature's embedding.
        integrand_features: Widths of the integrand network's hidden layers.
        nodes: Clenshaw–Curtis nodes of the quadrature.
        shared_integrand: One integrand network per step shared by all features (flowkit's
            layout before per-feature networks) instead of one per transformed feature (the
            UMNN paper's and zuko's), which fits better at equal parameter counts.
        hidden_features: Widths of each conditioner's hidden layers.
        autoregressive: MADE steps (True) or couplings (False).
        residual: Use residual blocks in the MADEs (autoregressive only).
        actnorm: Put an ActNorm (vector form) before every step.
        seed: Draw every initial weight from this seed (None: torch's global generator).

    Returns:
        The :class:`~flowkit.Flow`.

    References:
        Wehenkel & Louppe, Unconstrained Monotonic Neural Networks (2019).

    Example:
        >>> import torch
        >>> flow = umnn(2, transforms=2, signal=4, integrand_features=(8,), nodes=9)
        >>> flow.log_prob(torch.randn(10, 2)).shape
        torch.Size([10])
    """
    return build_umnn(
        UMNNConfig(
            features,
            context_features,
            transforms=transforms,
            signal=signal,
            integrand_features=integrand_features,  # type: ignore[arg-type]
            nodes=nodes,
            shared_integrand=shared_integrand,
            hidden_features=hidden_features,  # type: ignore[arg-type]
            autoregressive=autoregressive,
            residual=residual,
            actnorm=actnorm,
            seed=seed,
        )
    )
