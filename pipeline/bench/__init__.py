"""Benchmarks: the engine against the bare encoder, end to end through a broker, and state rebuild."""
