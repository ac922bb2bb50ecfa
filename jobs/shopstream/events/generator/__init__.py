"""The event generator: a simulated shop whose events go to Kafka."""
