"""Tests of flowkit.nn."""
