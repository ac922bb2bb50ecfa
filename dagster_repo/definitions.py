"""The code location: `dagster dev -m dagster_repo.definitions` (or `make ui`).

The launcher's mode and cluster settings come from the environment (SHOPSTREAM_LAUNCHER_MODE,
SHOPSTREAM_SPARK_APP_DEFAULTS, ...; see docs/kubernetes.md); with none set, everything runs locally on
the embedded default's lake.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

# Observed source assets are beta and partitioned asset checks a preview in Dagster 1.13; this
# graph relies on both on purpose, so their warnings at every load are noise.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from dagster_repo.defs.assets import GOLD_ASSETS, SILVER_ASSETS, iceberg_table_maintenance, streaming_health_monitor
from dagster_repo.defs.checks import GOLD_CHECKS
from dagster_repo.defs.jobs import JOBS_DEFS, SCHEDULES, SENSORS
from dagster_repo.defs.launcher import SparkLauncher  # noqa: E402 - after the warning filters


def build_definitions(launcher: SparkLauncher) -> dg.Definitions:
    """Everything of the code location, with the given launcher (tests pass their own)."""
    # Locally every step is a Spark JVM on this machine: one at a time unless told otherwise.
    # In a cluster each step only watches a SparkApplication, so several can run at once.
    max_concurrent = int(os.environ.get("SHOPSTREAM_MAX_CONCURRENT_STEPS", "1" if launcher.mode == "local" else "4"))
    return dg.Definitions(
        assets=[*SILVER_ASSETS, *GOLD_ASSETS, streaming_health_monitor, iceberg_table_maintenance],
        asset_checks=GOLD_CHECKS,
        jobs=JOBS_DEFS,
        schedules=SCHEDULES,
        sensors=SENSORS,
        resources={"spark_launcher": launcher},
        executor=dg.multiprocess_executor.configured({"max_concurrent": max_concurrent}),
    )


defs = build_definitions(SparkLauncher.from_env())
