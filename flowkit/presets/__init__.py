"""Ready-made flows assembled from library bijectors."""

from flowkit.presets.vector import MAFConfig, NSFConfig, build_maf, build_nsf, maf, nsf

__all__ = ["MAFConfig", "NSFConfig", "build_maf", "build_nsf", "maf", "nsf"]
