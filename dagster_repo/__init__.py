"""Dagster definitions for Shopstream: `dagster_repo.definitions:defs`."""
