"""MAF and NSF of flowkit, zuko and nflows at one architecture, with parameter-matched widths.

flowkit's presets (:func:`flowkit.presets.maf`, :func:`flowkit.presets.nsf`) are built with their
own defaults; each peer gets the same number of steps, hidden layers, bins and spline interval, and
a hidden width chosen by :func:`matched_width` so that its trainable parameter count is as close as
possible to flowkit's (the MADEs of the three libraries lay out their masked layers differently, so
equal widths would not give equal sizes).

Models: ``maf`` (affine MADE steps), ``nsf`` (rational-quadratic spline couplings, flowkit's
``nsf`` default, RQ-NSF (C)) and ``nsf-ar`` (autoregressive spline steps, ``nsf(autoregressive=
True)``, RQ-NSF (AR)). Steps are separated by feature reversals in every library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LIBRARIES",
    "MODELS",
    "Architecture",
    "DensityModel",
    "build_density_model",
    "default_architecture",
    "matched_width",
    "trainable_parameters",
]

MODELS = ("maf", "nsf", "nsf-ar")
LIBRARIES = ("flowkit", "zuko", "nflows")


@dataclass(frozen=True)
class Architecture:
    """What every library builds: the model kind, sizes, and the spline options (NSF only)."""

    model: str
    features: int
    transforms: int
    hidden_layers: int
    width: int
    bins: int
    tail_bound: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Architecture:
        return cls(**values)


def default_architecture(model: str, features: int) -> Architecture:
    """The architecture of flowkit's preset ``model`` with its defaults, read from its config."""
    from flowkit.presets import MAFConfig, NSFConfig

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {list(MODELS)}")
    maf_config = MAFConfig(features)
    nsf_config = NSFConfig(features)
    config = maf_config if model == "maf" else nsf_config
    widths = set(config.hidden_features)
    if len(widths) != 1:
        raise ValueError(f"the benchmark expects equal hidden widths, got {config.hidden_features}")
    return Architecture(
        model=model,
        features=features,
        transforms=config.transforms,
        hidden_layers=len(config.hidden_features),
        width=widths.pop(),
        bins=nsf_config.bins,
        tail_bound=nsf_config.tail_bound,
    )


@dataclass
class DensityModel:
    """A model reduced to what the measurements call: its parameters and ``log_prob``."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    initialize: Callable[[Tensor], None]


def trainable_parameters(module: nn.Module) -> int:
    """Trainable parameter entries (masked-out MADE weights included, as every library has them)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _no_initialization(batch: Tensor) -> None:
    return None


def _build_flowkit(arch: Architecture) -> DensityModel:
    import flowkit
    from flowkit.presets import maf, nsf

    hidden = (arch.width,) * arch.hidden_layers
    if arch.model == "maf":
        flow = maf(arch.features, transforms=arch.transforms, hidden_features=hidden)
    else:
        flow = nsf(
            arch.features,
            transforms=arch.transforms,
            hidden_features=hidden,
            bins=arch.bins,
            tail_bound=arch.tail_bound,
            autoregressive=arch.model == "nsf-ar",
        )

    def initialize(batch: Tensor) -> None:
        # Part of flowkit's documented use; a no-op for these presets (no ActNorm by default).
        flowkit.initialize(flow, batch)

    return DensityModel(flow, flow.log_prob, initialize)


def _build_zuko(arch: Architecture) -> DensityModel:
    """zuko's ``MAF`` (all three models are zuko MAFs with a different univariate transform).

    - ``maf``: ``zuko.flows.MAF``, affine steps (``MonotonicAffineTransform``: soft-clipped
      log-scale, where flowkit uses a shifted softplus scale).
    - ``nsf``: zuko's coupling is a MADE with ``passes=2``: with the natural order, the first
      ``ceil(D / 2)`` features condition the rest, as flowkit keeps the first ``D // 2`` (equal
      for even ``D``). ``zuko.flows.NSF`` is exactly ``MAF`` with
      ``univariate=MonotonicRQSTransform`` and these parameter shapes, but fixes the spline
      interval at [-5, 5]; it is built here through ``MAF`` so that the interval is flowkit's.
    - ``nsf-ar``: the same with ``passes=None`` (fully autoregressive, ``zuko.flows.NSF``'s
      default).

    zuko alternates natural and reversed orders between steps, which is flowkit's reversal.
    """
    import zuko

    options: dict[str, Any] = {
        "transforms": arch.transforms,
        "hidden_features": (arch.width,) * arch.hidden_layers,
    }
    if arch.model != "maf":
        options["univariate"] = partial(
            zuko.transforms.MonotonicRQSTransform, bound=arch.tail_bound
        )
        options["shapes"] = [(arch.bins,), (arch.bins,), (arch.bins - 1,)]
    if arch.model == "nsf":
        options["passes"] = 2
    flow = zuko.flows.MAF(arch.features, **options)

    def log_prob(x: Tensor) -> Tensor:
        return flow().log_prob(x)

    return DensityModel(flow, log_prob, _no_initialization)


class _NflowsConditioner(nn.Module):
    """nflows' own ``MLP`` behind the ``(inputs, context)`` call its coupling transforms make.

    ``hidden_features`` is the attribute by which nflows' spline couplings scale the raw bin
    widths and heights by ``1 / sqrt(width)`` at every call, as they do with nflows'
    ``ResidualNet``; without it nflows warns and skips that scaling.
    """

    def __init__(self, in_features: int, out_features: int, width: int, layers: int) -> None:
        super().__init__()
        from nflows.nn.nets import MLP

        self.hidden_features = width
        self.network = MLP((in_features,), (out_features,), [width] * layers)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.network(inputs)


def _build_nflows(arch: Architecture) -> DensityModel:
    """nflows' closest equivalents of flowkit's presets.

    - ``maf``: ``MaskedAutoregressiveFlow`` with ``use_residual_blocks=False`` and
      ``num_blocks_per_layer = hidden_layers - 1``: nflows' plain MADE is an input layer plus one
      masked layer per block, each followed by the activation, so this gives flowkit's hidden
      layers exactly (nflows' default, residual blocks, is flowkit's ``residual=True``). nflows'
      scale is ``softplus(h) + 1e-3``, flowkit's ``softplus(h + log(e - 1))``.
    - ``nsf``: ``PiecewiseRationalQuadraticCouplingTransform`` with linear tails, its conditioner
      nflows' ``MLP`` with flowkit's hidden layers (nflows has no NSF flow class; its coupling
      takes any network), the first ``D // 2`` features kept as in flowkit.
    - ``nsf-ar``: ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform``, plain MADE as for
      ``maf``.

    Steps are separated by ``ReversePermutation``, as flowkit's by ``Permute.reverse``.
    """
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow, MaskedAutoregressiveFlow
    from nflows.transforms import (
        CompositeTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )

    if arch.model == "maf":
        flow = MaskedAutoregressiveFlow(
            features=arch.features,
            hidden_features=arch.width,
            num_layers=arch.transforms,
            num_blocks_per_layer=arch.hidden_layers - 1,
            use_residual_blocks=False,
        )
        return DensityModel(flow, flow.log_prob, _no_initialization)

    def make_step() -> nn.Module:
        if arch.model == "nsf-ar":
            return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                features=arch.features,
                hidden_features=arch.width,
                num_bins=arch.bins,
                tails="linear",
                tail_bound=arch.tail_bound,
                num_blocks=arch.hidden_layers - 1,
                use_residual_blocks=False,
            )
        # nflows transforms the features whose mask entry is positive.
        mask = (torch.arange(arch.features) >= arch.features // 2).int()
        return PiecewiseRationalQuadraticCouplingTransform(
            mask,
            lambda inputs, outputs: _NflowsConditioner(
                inputs, outputs, arch.width, arch.hidden_layers
            ),
            num_bins=arch.bins,
            tails="linear",
            tail_bound=arch.tail_bound,
        )

    steps: list[nn.Module] = []
    for index in range(arch.transforms):
        if index:
            steps.append(ReversePermutation(arch.features))
        steps.append(make_step())
    flow = Flow(CompositeTransform(steps), StandardNormal([arch.features]))
    return DensityModel(flow, flow.log_prob, _no_initialization)


_BUILDERS: dict[str, Callable[[Architecture], DensityModel]] = {
    "flowkit": _build_flowkit,
    "zuko": _build_zuko,
    "nflows": _build_nflows,
}


def build_density_model(library: str, arch: Architecture) -> DensityModel:
    """Build ``library``'s model for ``arch`` (its ``width`` is the hidden width used)."""
    if library not in _BUILDERS:
        raise ValueError(f"unknown library {library!r}; expected one of {list(LIBRARIES)}")
    return _BUILDERS[library](arch)


def _count(library: str, arch: Architecture, width: int) -> int:
    # Building draws random initial weights; the caller reseeds before the model it trains.
    model = build_density_model(library, Architecture(**{**arch.to_dict(), "width": width}))
    return trainable_parameters(model.module)


def matched_width(library: str, arch: Architecture, target: int) -> tuple[int, int]:
    """The hidden width whose parameter count is closest to ``target``, and that count.

    The count grows with the width, so a bisection over ``[1, 16 * arch.width]`` finds the last
    width at or below the target; the closer of it and the next one wins.
    """
    low, high = 1, 16 * arch.width
    if _count(library, arch, high) < target:
        raise ValueError(
            f"{library} {arch.model}: no width up to {high} reaches {target} parameters"
        )
    while high - low > 1:
        middle = (low + high) // 2
        if _count(library, arch, middle) <= target:
            low = middle
        else:
            high = middle
    candidates = [(abs(_count(library, arch, w) - target), w) for w in (low, high)]
    _, width = min(candidates)
    return width, _count(library, arch, width)
