"""Daily batch jobs: silver -> gold, one date at a time."""
