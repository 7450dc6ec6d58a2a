"""Ready-made models assembled from flowkit's parts."""

from flowkit.presets.glow import GlowConfig, build_glow, glow
from flowkit.presets.realnvp import realnvp, realnvp_levels
from flowkit.presets.tabular import realnvp_tabular

__all__ = ["GlowConfig", "build_glow", "glow", "realnvp", "realnvp_levels", "realnvp_tabular"]
