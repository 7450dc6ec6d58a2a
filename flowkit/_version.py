"""The version of flowkit, read by the build backend and by ``flowkit.__version__``."""

__all__ = ["__version__"]

__version__ = "0.2.0"
