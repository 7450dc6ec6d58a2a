"""Ready-made models assembled from flowkit's parts."""

from flowkit.presets.glow import GlowConfig, build_glow, glow

__all__ = ["GlowConfig", "build_glow", "glow"]
