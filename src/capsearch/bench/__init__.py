"""Benchmarks behind `capsearch bench`."""
