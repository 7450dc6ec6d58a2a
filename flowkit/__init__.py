"""flowkit: composable normalizing flows for PyTorch, with a faithful Glow."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowkit._version import __version__ as __version__

# The names below resolve on first use (PEP 562), so that ``import flowkit`` and the ``flowkit``
# command's --help and --version do not pay for importing torch.
if TYPE_CHECKING:
    from flowkit import bijectors, data, distributions, nn
    from flowkit import cli as cli
    from flowkit import initialization as initialization
    from flowkit import latent as latent
    from flowkit import performance as performance
    from flowkit import presets as presets
    from flowkit import testing as testing
    from flowkit import train as train
    from flowkit import variational as variational
    from flowkit._tensors import set_validation
    from flowkit.bijectors import Bijector, Compose, Inverse, InverseNotAvailable, from_transform
    from flowkit.distributions import (
        ConditionalDiagonalNormal,
        Dequantized,
        DiagonalNormal,
        Flow,
        FlowDistribution,
        StandardNormal,
        VariationalDequantizer,
    )
    from flowkit.errors import FlowkitError
    from flowkit.initialization import initialize
    from flowkit.loading import load, load_flow
    from flowkit.train import fit

__all__ = [
    "Bijector",
    "Compose",
    "ConditionalDiagonalNormal",
    "Dequantized",
    "DiagonalNormal",
    "Flow",
    "FlowDistribution",
    "FlowkitError",
    "Inverse",
    "InverseNotAvailable",
    "StandardNormal",
    "VariationalDequantizer",
    "bijectors",
    "data",
    "distributions",
    "fit",
    "from_transform",
    "initialize",
    "load",
    "load_flow",
    "nn",
    "presets",
    "set_validation",
    "train",
    "variational",
]

# Where each lazily resolved object is defined.
_OBJECTS = {
    "Bijector": "flowkit.bijectors",
    "Compose": "flowkit.bijectors",
    "Inverse": "flowkit.bijectors",
    "InverseNotAvailable": "flowkit.bijectors",
    "from_transform": "flowkit.bijectors",
    "ConditionalDiagonalNormal": "flowkit.distributions",
    "Dequantized": "flowkit.distributions",
    "DiagonalNormal": "flowkit.distributions",
    "Flow": "flowkit.distributions",
    "FlowDistribution": "flowkit.distributions",
    "StandardNormal": "flowkit.distributions",
    "VariationalDequantizer": "flowkit.distributions",
    "initialize": "flowkit.initialization",
    "FlowkitError": "flowkit.errors",
    "fit": "flowkit.train",
    "load": "flowkit.loading",
    "load_flow": "flowkit.loading",
    "set_validation": "flowkit._tensors",
}

# Subpackages and modules reachable as ``flowkit.NAME`` after a plain ``import flowkit``.
_SUBMODULES = frozenset(
    {
        "bijectors",
        "cli",
        "data",
        "distributions",
        "errors",
        "initialization",
        "latent",
        "loading",
        "nn",
        "performance",
        "presets",
        "testing",
        "train",
        "variational",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        # Importing a submodule also binds it as an attribute of this package.
        return importlib.import_module(f"{__name__}.{name}")
    if name in _OBJECTS:
        value = getattr(importlib.import_module(_OBJECTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
