"""flowkit test suite."""
