"""Shared fixtures: one small local SparkSession for the whole run, a throwaway lake per test
module, and a real Kafka broker on free ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shopstream import lake
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.spark.iceberg import spark_session

# Fixtures defined next to the helpers they serve: `helm` (tests/deploy/chart.py), `skaffold` and
# `registry` (tests/deploy/skaffold.py); a test names them as parameters without importing them.
pytest_plugins = ["tests.deploy.chart", "tests.deploy.skaffold"]


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory) -> Path:
    """SHOPSTREAM_HOME for the test run: nothing is written into the working tree."""
    root = tmp_path_factory.mktemp("shopstream-home")
    os.environ["SHOPSTREAM_HOME"] = str(root)
    return root


@pytest.fixture(scope="session")
def lake_settings(lake_root) -> lake.LakeSettings:
    return lake.LakeSettings.local(lake_root / "lake")


@pytest.fixture(scope="session")
def spark(lake_settings):
    """One SparkSession for every test: two cores, few shuffle partitions, no UI."""
    session = spark_session(
        lake_settings,
        "shopstream-tests",
        extra_conf={
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.sql.adaptive.coalescePartitions.enabled": "false",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def iceberg(lake_settings):
    """pyiceberg's view of the same catalog Spark writes."""
    return lake.iceberg_catalog(lake_settings)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real single-node Kafka broker (KRaft) on a free port, with the project's topics."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port=free_port())
    broker.start()
    create_topics(broker.bootstrap_servers)
    yield broker
    broker.stop()


@pytest.fixture
def empty_lake(spark):
    """Drop every project table first, so a test starts from an empty catalog."""
    from shopstream import schema

    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {lake.CATALOG}.{schema.NAMESPACE}")
    for name in schema.TABLES:
        spark.sql(f"DROP TABLE IF EXISTS {lake.table_ref(name)} PURGE")
    return spark
