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
class Check:
    """A blocking check a daily job runs on its audit branch before it publishes."""

    name: str
    table: str  # the table it checks
    description: str


@dataclass(frozen=True)
class Job:
    name: str
    module: str  # defines `main(argv) -> int`
    description: str
    reads: tuple[str, ...] = ()  # tables that must exist first
    writes: tuple[str, ...] = ()  # tables it writes, in the order a daily job builds them
    daily: bool = False  # computes one day (`--date`): a daily partitioned Dagster asset
    checks: tuple[Check, ...] = ()  # must all pass before its writes are published

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
GOLD_CHECKS = (
    Check(
        "customer_completeness",
        schema.GOLD_CUSTOMER_ANALYTICS,
        "Every customer active in silver on the date (a page view, a cart add or a session that day, or an order "
        "placed that day) has exactly one row, and no row is invented.",
    ),
    Check(
        "customer_revenue_consistency",
        schema.GOLD_CUSTOMER_ANALYTICS,
        "Customer revenue adds up to the revenue of the date's orders in silver.",
    ),
    Check(
        "customer_segment_logic",
        schema.GOLD_CUSTOMER_ANALYTICS,
        "Each segment follows from the row's own figures; the score stays within 0..100.",
    ),
    Check(
        "sales_revenue_arithmetic",
        schema.GOLD_SALES_SUMMARY,
        "One summary row on a day with activity; its revenue equals that of the date's orders in silver and the "
        "per-category breakdown's sum; average order value equals revenue / orders.",
    ),
    Check(
        "sales_order_consistency",
        schema.GOLD_SALES_SUMMARY,
        "Orders equal silver's distinct orders of the date; converted sessions equal the date's silver sessions "
        "with an order line; buyers <= orders <= units; device and referrer breakdowns add up to the sessions, "
        "less those silver has no device or referrer for.",
    ),
    Check(
        "product_rates_in_range",
        schema.GOLD_PRODUCT_ANALYTICS,
        "Every conversion rate lies in [0, 1] (or is null for a zero denominator).",
    ),
    Check(
        "product_views_cover_purchases",
        schema.GOLD_PRODUCT_ANALYTICS,
        "A product is viewed in at least as many sessions as it is bought in, and its views are at least its "
        "viewing sessions.",
    ),
)
# Each gold table and the silver tables it is computed from (its lineage in Dagster).
GOLD_TABLE_READS: dict[str, tuple[str, ...]] = {
    schema.GOLD_CUSTOMER_ANALYTICS: _SILVER_FOR_GOLD,
    schema.GOLD_SALES_SUMMARY: _SILVER_FOR_GOLD,
    schema.GOLD_SALES_BY_CATEGORY: (schema.SILVER_PURCHASES,),
    schema.GOLD_PRODUCT_ANALYTICS: (schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_PRODUCTS),
    schema.SILVER_DATA_QUALITY_REPORT: (*_SILVER_FOR_GOLD, schema.QUARANTINE),
}
GOLD = Job(
    "gold",
    "shopstream.spark.batch.gold",
    "Every gold table of a day from one read of silver (customer analytics, sales summary and by category, "
    "product analytics, the silver data-quality report), written to an audit branch, checked, then published.",
    reads=tuple(dict.fromkeys(name for reads in GOLD_TABLE_READS.values() for name in reads)),
    writes=tuple(GOLD_TABLE_READS),
    daily=True,
    checks=GOLD_CHECKS,
)
MAINTENANCE = Job(
    "maintenance",
    "shopstream.spark.maintenance",
    "Iceberg maintenance: compact closed day partitions and the streaming tables' manifests, expire old "
    "snapshots, remove orphan files.",
)

JOBS: dict[str, Job] = {job.name: job for job in (STREAMING, GOLD, MAINTENANCE)}
DAILY: tuple[Job, ...] = tuple(job for job in JOBS.values() if job.daily)


def markdown_table() -> str:
    """The catalog as the README shows it (a test keeps the two equal)."""

    def names(tables: tuple[str, ...]) -> str:
        return ", ".join(f"`{name}`" for name in tables) or "none"

    rows = [f"| `{job.name}` | {names(job.reads)} | {names(job.writes)} | {job.description} |" for job in JOBS.values()]
    return "\n".join(["| job | reads | writes | what |", "|---|---|---|---|", *rows])
