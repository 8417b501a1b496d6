"""Adapters that replay public fault-injection datasets through the real path."""
