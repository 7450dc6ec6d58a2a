"""Tests of flowkit.presets."""
