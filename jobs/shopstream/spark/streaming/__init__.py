"""The streaming job: Kafka topics into bronze and silver Iceberg tables."""
