"""Warehouse writers: standard and statistics records into PostgreSQL, idempotently."""
