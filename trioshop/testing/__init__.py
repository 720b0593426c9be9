"""Helpers for driving a real trioshop server from tests and benchmarks."""
