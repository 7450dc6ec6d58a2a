"""Tests of flowkit.data."""
