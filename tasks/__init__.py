"""Prefect tasks: one module per step of the incident analysis, each a thin wrapper over ``baynet``."""
