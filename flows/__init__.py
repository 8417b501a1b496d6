"""Prefect flows: incident RCA, topology refresh, backfill. Orchestration only."""
