"""The Glow models under test, flowkit's and normflows', behind one small interface.

Both libraries build the same model description (``config``: ``K``, ``L``, ``input_shape``,
``hidden_channels``, ``coupling``, ``permutation``) and are driven identically by the measurements:
``initialize(batch)``, ``log_prob(x)`` and ``sample(n, temperature)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LIBRARIES", "BenchModel", "build_model", "library_version"]


@dataclass
class BenchModel:
    """A model of one library, reduced to what the measurements call."""

    module: nn.Module
    initialize: Callable[[Tensor], None]
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int, float], Tensor]


def _build_flowkit(config: dict[str, Any], preset: dict[str, Any]) -> BenchModel:
    import flowkit
    from flowkit.performance import tune_allocator
    from flowkit.presets import glow

    # What flowkit's trainer and command line do at start-up, whatever the environment says.
    tune_allocator()

    options = dict(config)
    clash = sorted(set(options) & set(preset))
    if clash:
        raise ValueError(f"preset options {clash} repeat fields of the shared model config")
    flow = glow(
        options.pop("K"),
        options.pop("L"),
        options.pop("coupling"),
        input_shape=tuple(options.pop("input_shape")),
        **options,
        **preset,
    )

    def initialize(batch: Tensor) -> None:
        flowkit.initialize(flow, batch)

    def sample(n: int, temperature: float) -> Tensor:
        return flow.sample(n, temperature=temperature)

    return BenchModel(flow, initialize, flow.log_prob, sample)


def _build_normflows(config: dict[str, Any], preset: dict[str, Any]) -> BenchModel:
    """normflows' Glow, built as its own Glow example builds it, at flowkit's configuration.

    Per level (coarsest first, as ``MultiscaleFlow`` lists them): ``K`` ``GlowBlock``s (affine
    coupling with sigmoid scale, LU 1x1 convolution, ActNorm), then a ``Squeeze``; a ``Merge``
    between levels; a ``GlowBase`` prior (learned per-channel mean and log-scale) per level.

    Where it differs from Glow as flowkit (and the official code) builds it:

    - Factored-out halves get an unconditional ``GlowBase`` prior; Glow's split prior is a
      zero-initialised 3x3 convolution of the kept half (flowkit's ``FactorOut``), so flowkit has
      one extra small convolution per split.
    - The top prior is ``GlowBase`` (per channel); flowkit's learned top prior is a zero 3x3
      convolution of zeros (per position), recomputed on each call (a few kFLOPs).
    - The coupling network (``ConvNet2d``, kernels 3-1-3, ReLU) uses biases and no ActNorm, zero
      padding, and a plain zero-initialised output convolution; Glow's (flowkit's
      ``GlowConditioner``) uses bias-free convolutions followed by ActNorm, an extra "edge" input
      channel in each 3x3 convolution, and an output scaled by ``exp(3 * logs)``. The FLOP counts
      differ by these few percent; both are reported.
    - Step order (ActNorm, 1x1 convolution, coupling on the data side) and the coupling's scale
      ``sigmoid(h + 2)`` match; normflows subtracts the shift before scaling, Glow adds it.
    - ActNorm initialises itself on its first call behind a tensor-valued ``if`` evaluated on every
      call (a host synchronisation per layer on a GPU); the 1x1 convolution assembles ``P L U`` on
      every call and, when sampling, inverts ``L`` and ``U`` in float64 on every call.
    """
    import normflows as nf

    if preset:
        raise ValueError(f"normflows takes no preset options, got {sorted(preset)}")
    if config["coupling"] not in ("affine", "additive"):
        raise ValueError(
            f"normflows' Glow supports affine or additive coupling, got {config['coupling']!r}"
        )
    lu = {"conv1x1_lu": True, "conv1x1": False}.get(config["permutation"])
    if lu is None:
        raise ValueError(
            f"normflows' Glow mixes channels with a 1x1 convolution ('conv1x1_lu' or 'conv1x1'), "
            f"got permutation {config['permutation']!r}"
        )
    channels, height, width = config["input_shape"]
    K, L = config["K"], config["L"]
    priors, flows, merges = [], [], []
    for level in range(L):
        # Level 0 is the coarsest; data enter at level L - 1, whose squeeze gives 4 C channels.
        level_channels = channels * 2 ** (L + 1 - level)
        blocks: list[nn.Module] = [
            nf.flows.GlowBlock(
                level_channels,
                config["hidden_channels"],
                scale=config["coupling"] == "affine",
                scale_map="sigmoid",
                split_mode="channel",
                use_lu=lu,
            )
            for _ in range(K)
        ]
        blocks.append(nf.flows.Squeeze())
        flows.append(blocks)
        if level > 0:
            merges.append(nf.flows.Merge())
            factor = 2 ** (L - level)
            latent_shape = (channels * factor, height // factor, width // factor)
        else:
            factor = 2**L
            latent_shape = (channels * 2 * factor, height // factor, width // factor)
        priors.append(nf.distributions.GlowBase(latent_shape))
    model = nf.MultiscaleFlow(priors, flows, merges, class_cond=False)

    def initialize(batch: Tensor) -> None:
        # normflows' ActNorm layers initialise themselves from the first batch they see.
        with torch.no_grad():
            model.log_prob(batch, None)

    def log_prob(x: Tensor) -> Tensor:
        return model.log_prob(x, None)

    def sample(n: int, temperature: float) -> Tensor:
        return model.sample(n, temperature=temperature)[0]

    return BenchModel(model, initialize, log_prob, sample)


LIBRARIES: dict[str, Callable[[dict[str, Any], dict[str, Any]], BenchModel]] = {
    "flowkit": _build_flowkit,
    "normflows": _build_normflows,
}


def build_model(library: str, config: dict[str, Any], preset: dict[str, Any]) -> BenchModel:
    """Build ``library``'s Glow for the shared ``config``; ``preset`` adds builder options."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}; expected one of {sorted(LIBRARIES)}")
    return LIBRARIES[library](config, preset)


def library_version(library: str) -> str | None:
    """The installed version of ``library``, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    if library == "flowkit":  # the distribution is flowkit-torch; the module knows its version
        import flowkit

        return flowkit.__version__
    try:
        return version(library)
    except PackageNotFoundError:
        return None
