"""Tests of flowkit.bijectors."""
