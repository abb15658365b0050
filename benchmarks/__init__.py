"""Benchmarks: zoo against plain Keras and the machine's own limit (python -m benchmarks.run)."""
