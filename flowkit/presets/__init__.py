"""Ready-made models assembled from flowkit's parts, each a typed config and a builder, by name.

Names resolve on first use, so that listing the run presets (``flowkit presets``) and the registry
of model families does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.presets.circular import NCSFConfig, build_ncsf, ncsf
    from flowkit.presets.cnf import CNFConfig, CNFFlow, build_cnf, cnf
    from flowkit.presets.flowpp import FlowPPConfig, build_flowpp, flowpp
    from flowkit.presets.glow import GlowConfig, GlowFlow, build_glow, glow
    from flowkit.presets.neural import (
        NAFConfig,
        UMNNConfig,
        build_naf,
        build_umnn,
        naf,
        umnn,
    )
    from flowkit.presets.realnvp import RealNVPConfig, build_realnvp, realnvp, realnvp_levels
    from flowkit.presets.registry import (
        MODELS,
        ModelEntry,
        PresetError,
        build_model,
        config_from_dict,
        get_model,
        register_model,
    )
    from flowkit.presets.resflow import ResFlowConfig, build_resflow, resflow, resflow_image
    from flowkit.presets.standardize import standardized
    from flowkit.presets.tabular import RealNVPTabularConfig, build_realnvp_tabular, realnvp_tabular
    from flowkit.presets.tarflow import TarFlowConfig, TarFlowFlow, build_tarflow, denoise, tarflow
    from flowkit.presets.vector import MAFConfig, NSFConfig, build_maf, build_nsf, iaf, maf, nsf

__all__ = [
    "CNFConfig",
    "CNFFlow",
    "build_cnf",
    "cnf",
    "NCSFConfig",
    "build_ncsf",
    "ncsf",
    "FlowPPConfig",
    "GlowConfig",
    "GlowFlow",
    "MAFConfig",
    "MODELS",
    "NAFConfig",
    "ModelEntry",
    "NSFConfig",
    "PresetError",
    "RealNVPConfig",
    "RealNVPTabularConfig",
    "ResFlowConfig",
    "build_flowpp",
    "TarFlowConfig",
    "TarFlowFlow",
    "build_glow",
    "build_maf",
    "build_naf",
    "build_model",
    "build_nsf",
    "build_realnvp",
    "build_realnvp_tabular",
    "build_resflow",
    "build_tarflow",
    "build_umnn",
    "config_from_dict",
    "denoise",
    "get_model",
    "flowpp",
    "iaf",
    "glow",
    "maf",
    "naf",
    "nsf",
    "realnvp",
    "realnvp_levels",
    "realnvp_tabular",
    "register_model",
    "resflow",
    "resflow_image",
    "standardized",
    "tarflow",
    "umnn",
    "UMNNConfig",
]

# Where each name is defined.
_HOMES = {
    "CNFConfig": "flowkit.presets.cnf",
    "CNFFlow": "flowkit.presets.cnf",
    "build_cnf": "flowkit.presets.cnf",
    "cnf": "flowkit.presets.cnf",
    "NCSFConfig": "flowkit.presets.circular",
    "build_ncsf": "flowkit.presets.circular",
    "ncsf": "flowkit.presets.circular",
    "FlowPPConfig": "flowkit.presets.flowpp",
    "build_flowpp": "flowkit.presets.flowpp",
    "flowpp": "flowkit.presets.flowpp",
    "GlowConfig": "flowkit.presets.glow",
    "GlowFlow": "flowkit.presets.glow",
    "build_glow": "flowkit.presets.glow",
    "glow": "flowkit.presets.glow",
    "RealNVPConfig": "flowkit.presets.realnvp",
    "build_realnvp": "flowkit.presets.realnvp",
    "realnvp": "flowkit.presets.realnvp",
    "realnvp_levels": "flowkit.presets.realnvp",
    "NAFConfig": "flowkit.presets.neural",
    "UMNNConfig": "flowkit.presets.neural",
    "build_naf": "flowkit.presets.neural",
    "build_umnn": "flowkit.presets.neural",
    "naf": "flowkit.presets.neural",
    "umnn": "flowkit.presets.neural",
    "MODELS": "flowkit.presets.registry",
    "ModelEntry": "flowkit.presets.registry",
    "PresetError": "flowkit.presets.registry",
    "build_model": "flowkit.presets.registry",
    "config_from_dict": "flowkit.presets.registry",
    "get_model": "flowkit.presets.registry",
    "register_model": "flowkit.presets.registry",
    "ResFlowConfig": "flowkit.presets.resflow",
    "build_resflow": "flowkit.presets.resflow",
    "resflow": "flowkit.presets.resflow",
    "resflow_image": "flowkit.presets.resflow",
    "standardized": "flowkit.presets.standardize",
    "RealNVPTabularConfig": "flowkit.presets.tabular",
    "build_realnvp_tabular": "flowkit.presets.tabular",
    "realnvp_tabular": "flowkit.presets.tabular",
    "TarFlowConfig": "flowkit.presets.tarflow",
    "TarFlowFlow": "flowkit.presets.tarflow",
    "build_tarflow": "flowkit.presets.tarflow",
    "denoise": "flowkit.presets.tarflow",
    "tarflow": "flowkit.presets.tarflow",
    "MAFConfig": "flowkit.presets.vector",
    "NSFConfig": "flowkit.presets.vector",
    "build_maf": "flowkit.presets.vector",
    "build_nsf": "flowkit.presets.vector",
    "iaf": "flowkit.presets.vector",
    "maf": "flowkit.presets.vector",
    "nsf": "flowkit.presets.vector",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _PresetsModule(types.ModuleType):
    """The package, whose functions (``glow``, ``flowpp``, ``tarflow``, ...) share module names.

    Importing a submodule binds it as an attribute of the package; the function of the same name
    (what ``flowkit.presets.glow`` meant when the package imported it eagerly) wins on lookup.
    """

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if isinstance(value, types.ModuleType) and _HOMES.get(name) == value.__name__:
            return getattr(value, name)
        return value


sys.modules[__name__].__class__ = _PresetsModule
