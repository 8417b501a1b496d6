"""Tempo: an HTTP client for its API and a Tempo-compatible replay server for local use and tests."""
