"""Every setting of Shopstream, in one table: its environment variable, default and meaning.

Code reads a setting through its `Setting` here and nowhere else reads a `SHOPSTREAM_*` variable;
`python -m shopstream.settings` prints the table. Reading a setting never creates anything.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str | None
    meaning: str

    def read(self, env: Mapping[str, str] | None = None) -> str | None:
        """The variable's value; its default when unset or empty."""
        return (os.environ if env is None else env).get(self.variable) or self.default

    def read_int(self, env: Mapping[str, str] | None = None) -> int:
        text = self.read(env)
        try:
            return int(text or "")
        except ValueError:
            raise ValueError(f"{self.variable}={text!r} is not a whole number") from None

    def add_argument(self, parser: argparse._ActionsContainer, flag: str, **kwargs: Any) -> None:
        """`flag` on a command line, defaulting to this setting; a bad value in the environment
        stops the command with the variable's name."""
        convert = kwargs.get("type")
        default: Any = self.read()
        if convert is not None and default is not None:
            try:
                default = convert(default)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise SystemExit(f"error: {self.variable}: {exc}") from None
        parser.add_argument(flag, default=default, help=f"{self.meaning} (env {self.variable})", **kwargs)


# -- the embedded default's folders ------------------------------------------------------------
HOME = Setting(
    "SHOPSTREAM_HOME",
    ".demo",
    "root of the embedded default's state: catalog, warehouse, checkpoints, broker, Dagster instance",
)
CACHE = Setting("SHOPSTREAM_CACHE", None, "downloads and builds (JVM jars, tools); default $XDG_CACHE_HOME/shopstream")

# -- the lake ------------------------------------------------------------------------------------
CATALOG_URI = Setting(
    "SHOPSTREAM_CATALOG_URI",
    None,
    "JDBC URI of the Iceberg catalog database; default the SQLite catalog under the home folder",
)
WAREHOUSE = Setting("SHOPSTREAM_WAREHOUSE", None, "warehouse root, file:// or s3://; default <home>/warehouse")
CATALOG_USER = Setting("SHOPSTREAM_CATALOG_USER", None, "user of the catalog database")
CATALOG_PASSWORD = Setting("SHOPSTREAM_CATALOG_PASSWORD", None, "password of the catalog database (from a Secret)")
S3_ENDPOINT = Setting("SHOPSTREAM_S3_ENDPOINT", None, "S3-compatible endpoint of s3:// warehouses and checkpoints")
S3_REGION = Setting("AWS_REGION", "us-east-1", "region of the S3 client")
CHECKPOINT_DIR = Setting(
    "SHOPSTREAM_CHECKPOINT_DIR",
    None,
    "root of the streaming query's checkpoint, local path or s3a://; default <home>/checkpoints",
)

# -- Kafka and the streaming job -----------------------------------------------------------------
KAFKA_BOOTSTRAP = Setting("SHOPSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers")
TRIGGER = Setting(
    "SHOPSTREAM_TRIGGER",
    "catch-up",
    "'catch-up': process everything available, then exit; or a micro-batch interval such as "
    "'10 seconds' to run continuously",
)
MAX_OFFSETS_PER_TRIGGER = Setting(
    "SHOPSTREAM_MAX_OFFSETS_PER_TRIGGER", "200000", "most Kafka records per micro-batch, over all topics"
)
STARTING_OFFSETS = Setting("SHOPSTREAM_STARTING_OFFSETS", "earliest", "where a query without a checkpoint starts")
ALLOWED_LATENESS = Setting(
    "SHOPSTREAM_ALLOWED_LATENESS",
    "1800",
    "seconds an event may arrive after it happened and still count in its session; later "
    "ones stay in silver and are recorded in quarantine_events as late_event",
)
FAIL_ON_DATA_LOSS = Setting(
    "SHOPSTREAM_FAIL_ON_DATA_LOSS",
    "true",
    "'true': stop when Kafka no longer holds records the checkpoint expects (deleted by "
    "retention before they were read, or a recreated topic); 'false': go on from what is there",
)
MAX_EVENT_AGE_DAYS = Setting(
    "SHOPSTREAM_MAX_EVENT_AGE_DAYS",
    "365",
    "days an event time may lie before its Kafka record's timestamp; an older one is "
    "implausible and goes to quarantine_events as implausible_event_time",
)
MAX_EVENT_LEAD_SECONDS = Setting(
    "SHOPSTREAM_MAX_EVENT_LEAD_SECONDS",
    "3600",
    "seconds an event time may lie after its Kafka record's timestamp (clock skew); a "
    "later one goes to quarantine_events as implausible_event_time",
)

# -- the gold job -----------------------------------------------------------------------------------
TOGETHER_MIN_BASKETS = Setting(
    "SHOPSTREAM_TOGETHER_MIN_BASKETS",
    "2",
    "fewest baskets (orders, or viewing sessions) two products must share on a day to be listed in "
    "gold_product_analytics' bought_together or viewed_together",
)

# -- local Spark -----------------------------------------------------------------------------------
SPARK_MASTER = Setting("SHOPSTREAM_SPARK_MASTER", "local[*]", "Spark master of jobs run on this machine")
DRIVER_MEMORY = Setting("SHOPSTREAM_DRIVER_MEMORY", "2g", "driver memory of jobs run on this machine")
SHUFFLE_PARTITIONS = Setting("SHOPSTREAM_SHUFFLE_PARTITIONS", "8", "spark.sql.shuffle.partitions of every job")
SPARK_LOG_LEVEL = Setting(
    "SHOPSTREAM_SPARK_LOG_LEVEL",
    None,
    "log level of Spark's own logging; default ERROR locally, WARN in a SparkApplication",
)
SPARK_UI = Setting("SHOPSTREAM_SPARK_UI", "false", "'true' serves the Spark UI of local jobs")

# -- Dagster ---------------------------------------------------------------------------------------
LAUNCHER_MODE = Setting(
    "SHOPSTREAM_LAUNCHER_MODE", "local", "'local': Spark jobs run on this machine; 'kubernetes': as SparkApplications"
)
MAX_CONCURRENT_STEPS = Setting(
    "SHOPSTREAM_MAX_CONCURRENT_STEPS", None, "steps a run executes at once; default 1 locally, 4 in kubernetes mode"
)
PARTITIONS_START = Setting("SHOPSTREAM_PARTITIONS_START", "2026-01-01", "first day of the daily partitions")
HEALTH_MAX_PROGRESS_AGE = Setting(
    "SHOPSTREAM_HEALTH_MAX_PROGRESS_AGE", "900", "unhealthy when the last micro-batch finished more seconds ago"
)
HEALTH_MAX_LAG = Setting("SHOPSTREAM_HEALTH_MAX_LAG", "200000", "unhealthy above this many unread Kafka records")
HEALTH_SENSOR_INTERVAL = Setting(
    "SHOPSTREAM_HEALTH_SENSOR_INTERVAL_SECONDS", "300", "seconds between two evaluations of the streaming health sensor"
)
RECOMPUTE_LOOKBACK_DAYS = Setting(
    "SHOPSTREAM_RECOMPUTE_LOOKBACK_DAYS",
    "7",
    "days back from today whose gold the recompute sensor re-materializes when their silver changed",
)
RECOMPUTE_SENSOR_INTERVAL = Setting(
    "SHOPSTREAM_RECOMPUTE_SENSOR_INTERVAL_SECONDS", "600", "seconds between two evaluations of the recompute sensor"
)
UI_PORT = Setting("SHOPSTREAM_UI_PORT", "3000", "port of `make ui`")

# -- kubernetes mode -------------------------------------------------------------------------------
SPARK_NAMESPACE = Setting("SHOPSTREAM_SPARK_NAMESPACE", "shopstream", "namespace of the SparkApplications")
SPARK_IMAGE = Setting("SHOPSTREAM_SPARK_IMAGE", "", "the Spark job image (images/spark), by digest or unique tag")
SPARK_VERSION = Setting("SHOPSTREAM_SPARK_VERSION", "", "spec.sparkVersion; default the pinned pyspark's")
SPARK_SERVICE_ACCOUNT = Setting(
    "SHOPSTREAM_SPARK_SERVICE_ACCOUNT",
    "",
    "service account of the drivers; default the one in the application defaults",
)
SPARK_ENV_CONFIGMAP = Setting(
    "SHOPSTREAM_SPARK_ENV_CONFIGMAP", "", "ConfigMap of lake settings given to drivers and executors"
)
SPARK_ENV_SECRET = Setting("SHOPSTREAM_SPARK_ENV_SECRET", "", "Secret of credentials given to drivers and executors")
SPARK_APP_DEFAULTS = Setting(
    "SHOPSTREAM_SPARK_APP_DEFAULTS",
    "",
    "JSON: the spec every SparkApplication of the deployment shares (published by the chart)",
)
KUBECONFIG = Setting("SHOPSTREAM_KUBECONFIG", "", "kubeconfig file; default in-cluster, else the default kubeconfig")
STREAMING_APP = Setting(
    "SHOPSTREAM_STREAMING_APP", "shopstream-streaming", "name of the long-running streaming SparkApplication"
)

ALL: tuple[Setting, ...] = tuple(value for value in dict(globals()).values() if isinstance(value, Setting))


def home(env: Mapping[str, str] | None = None) -> Path:
    """The home folder as an absolute path: every process given it reads the same lake."""
    return Path(HOME.read(env) or ".demo").expanduser().resolve()


def main() -> int:
    width = max(len(s.variable) for s in ALL)
    for setting in ALL:
        default = "" if setting.default in (None, "") else f" [default: {setting.default}]"
        print(f"{setting.variable:<{width}}  {setting.meaning}{default}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
