"""Shared fixtures: a scripted OpenAI-compatible upstream owned by the test suite."""
