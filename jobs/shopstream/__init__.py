"""Shopstream: e-commerce events from Kafka through Spark into Iceberg, orchestrated by Dagster."""
