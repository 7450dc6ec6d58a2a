"""Ready-made models assembled from flowkit's parts: Glow, RealNVP, MAF, NSF."""

from flowkit.presets.glow import GlowConfig, build_glow, glow
from flowkit.presets.realnvp import realnvp, realnvp_levels
from flowkit.presets.tabular import realnvp_tabular
from flowkit.presets.vector import MAFConfig, NSFConfig, build_maf, build_nsf, maf, nsf

__all__ = [
    "GlowConfig",
    "MAFConfig",
    "NSFConfig",
    "build_glow",
    "build_maf",
    "build_nsf",
    "glow",
    "maf",
    "nsf",
    "realnvp",
    "realnvp_levels",
    "realnvp_tabular",
]
