"""Tests of flowkit.distributions."""
