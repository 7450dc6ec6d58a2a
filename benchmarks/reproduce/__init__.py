"""Glow's experiments at CPU scale: ``python -m benchmarks.reproduce all [--quick]``."""

__all__: list[str] = []
