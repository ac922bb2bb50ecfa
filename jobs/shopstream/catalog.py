"""The job catalog: every Spark job of the project, what it reads and writes, in one list.

`python -m shopstream` runs a job by its name here, the Dagster code location builds its assets
from it, and neither has to import pyspark to know what a job is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from shopstream import schema


@dataclass(frozen=True)
class Job:
    name: str
    module: str  # defines `main(argv) -> int`
    description: str
    reads: tuple[str, ...] = ()  # tables that must exist first
    writes: tuple[str, ...] = ()  # tables it writes, in the order a daily job builds them
    daily: bool = False  # computes one day (`--date`): a daily partitioned Dagster asset

    def entry_point(self) -> Callable[[list[str]], int]:
        return importlib.import_module(self.module).main


_SILVER_FOR_GOLD = (schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_USER_SESSIONS)

STREAMING = Job(
    "streaming",
    "shopstream.spark.streaming.job",
    "Kafka -> bronze and silver Iceberg tables, exactly once (continuously, or a catch-up that stops).",
    writes=(
        schema.BRONZE_EVENTS,
        schema.SILVER_PAGE_VIEWS,
        schema.SILVER_PURCHASES,
        schema.SILVER_USER_SESSIONS,
        schema.SILVER_PRODUCTS,
        schema.QUARANTINE,
        schema.STREAMING_PROGRESS,
    ),
)
CUSTOMER_ANALYTICS = Job(
    schema.GOLD_CUSTOMER_ANALYTICS,
    "shopstream.spark.batch.customer_analytics",
    "Daily customer analytics: activity, orders, lifetime value, engagement score and segment.",
    reads=_SILVER_FOR_GOLD,
    writes=(schema.GOLD_CUSTOMER_ANALYTICS,),
    daily=True,
)
SALES_SUMMARY = Job(
    schema.GOLD_SALES_SUMMARY,
    "shopstream.spark.batch.sales_summary",
    "Daily sales KPIs, conversion, traffic by device and referrer, and revenue by category.",
    reads=_SILVER_FOR_GOLD,
    writes=(schema.GOLD_SALES_SUMMARY, schema.GOLD_SALES_BY_CATEGORY),
    daily=True,
)
PRODUCT_ANALYTICS = Job(
    schema.GOLD_PRODUCT_ANALYTICS,
    "shopstream.spark.batch.product_analytics",
    "Daily product performance: views, carts, purchases, conversion, ranks and recommendations.",
    reads=(schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_PRODUCTS),
    writes=(schema.GOLD_PRODUCT_ANALYTICS,),
    daily=True,
)
DATA_QUALITY_REPORT = Job(
    schema.SILVER_DATA_QUALITY_REPORT,
    "shopstream.spark.batch.data_quality",
    "Daily data quality of the silver tables: volume, nulls, duplicates, ranges, late and quarantined records, "
    "freshness.",
    reads=(*_SILVER_FOR_GOLD, schema.QUARANTINE),
    writes=(schema.SILVER_DATA_QUALITY_REPORT,),
    daily=True,
)
MAINTENANCE = Job(
    "maintenance",
    "shopstream.spark.maintenance",
    "Iceberg maintenance: compact closed day partitions and the streaming tables' manifests, expire old "
    "snapshots, remove orphan files.",
)

JOBS: dict[str, Job] = {
    job.name: job
    for job in (STREAMING, CUSTOMER_ANALYTICS, SALES_SUMMARY, PRODUCT_ANALYTICS, DATA_QUALITY_REPORT, MAINTENANCE)
}
DAILY: tuple[Job, ...] = tuple(job for job in JOBS.values() if job.daily)


def markdown_table() -> str:
    """The catalog as the README shows it (a test keeps the two equal)."""

    def names(tables: tuple[str, ...]) -> str:
        return ", ".join(f"`{name}`" for name in tables) or "none"

    rows = [f"| `{job.name}` | {names(job.reads)} | {names(job.writes)} | {job.description} |" for job in JOBS.values()]
    return "\n".join(["| job | reads | writes | what |", "|---|---|---|---|", *rows])
