"""Ready-made models assembled from flowkit's parts, each a typed config and a builder, by name."""

from flowkit.presets.glow import GlowConfig, GlowFlow, build_glow, glow
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
from flowkit.presets.standardize import StandardizedContext, standardized
from flowkit.presets.tabular import RealNVPTabularConfig, build_realnvp_tabular, realnvp_tabular
from flowkit.presets.vector import MAFConfig, NSFConfig, build_maf, build_nsf, maf, nsf

__all__ = [
    "GlowConfig",
    "GlowFlow",
    "MAFConfig",
    "MODELS",
    "ModelEntry",
    "NSFConfig",
    "PresetError",
    "RealNVPConfig",
    "RealNVPTabularConfig",
    "StandardizedContext",
    "build_glow",
    "build_maf",
    "build_model",
    "build_nsf",
    "build_realnvp",
    "build_realnvp_tabular",
    "config_from_dict",
    "get_model",
    "glow",
    "maf",
    "nsf",
    "realnvp",
    "realnvp_levels",
    "realnvp_tabular",
    "register_model",
    "standardized",
]
