"""Pytest fixtures for plugin authors (registered as a pytest11 entry point)."""
