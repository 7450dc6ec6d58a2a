"""Tests of flowkit.testing."""
