"""Benchmarks for kimi-proxy: the proxy against the scripted provider itself (see README.md)."""
