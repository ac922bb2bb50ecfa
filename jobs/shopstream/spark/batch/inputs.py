"""What the gold job reads: the silver rows of a day, each table pinned to the snapshot that was
current when the job started, and the windows several gold tables share read once and kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopstream import lake, schema
from shopstream.rules import ORDER_SPAN_DAYS


class MissingTable(RuntimeError):
    pass


@dataclass(frozen=True)
class Inputs:
    """The silver rows a job may read for `day`, each as a lazy DataFrame, and the job's own
    options (its arguments beyond the date and the lake)."""

    spark: SparkSession
    day: dt.date
    options: argparse.Namespace = field(default_factory=argparse.Namespace)
    # table -> the snapshot every read of it uses (None: the table has none yet); unlisted: the current one
    snapshots: dict[str, int | None] = field(default_factory=dict)
    _kept: dict[str, DataFrame] = field(default_factory=dict, compare=False, repr=False)

    def table(self, name: str) -> DataFrame:
        snapshot = self.snapshots.get(name)
        return self.spark.table(lake.table_ref(name) + (f".snapshot_id_{snapshot}" if snapshot else ""))

    def _kept_as(self, key: str, rows: DataFrame) -> DataFrame:
        """`rows`, computed once and kept for every later use (several gold tables read them)."""
        if key not in self._kept:
            self._kept[key] = rows.persist()
        return self._kept[key]

    def release(self) -> None:
        for rows in self._kept.values():
            rows.unpersist()
        self._kept.clear()

    def page_views(self) -> DataFrame:
        return self._kept_as(
            "page_views", self.table(schema.SILVER_PAGE_VIEWS).where(F.col("event_date") == F.lit(self.day))
        )

    def purchases(self) -> DataFrame:
        """The order lines that happened on the day."""
        return self.table(schema.SILVER_PURCHASES).where(F.col("event_date") == F.lit(self.day))

    def order_lines(self, days_before: int | None = 0) -> DataFrame:
        """Every line of the orders placed on the day and on the `days_before` days before it (None:
        all history): the lines of those days and of ORDER_SPAN_DAYS more on either side, where an
        order's first line or its last lines may lie."""
        day = F.lit(self.day)
        rows = self.table(schema.SILVER_PURCHASES).where(F.col("event_date") <= F.date_add(day, ORDER_SPAN_DAYS))
        if days_before is not None:
            rows = rows.where(F.col("event_date") >= F.date_sub(day, days_before + ORDER_SPAN_DAYS))
        return self._kept_as("order_lines", rows) if days_before == 0 else rows

    def sessions(self, days_before: int = 0) -> DataFrame:
        """The sessions started on the day and on the `days_before` days before it."""
        day = F.lit(self.day)
        rows = self.table(schema.SILVER_USER_SESSIONS).where(
            (F.col("session_date") <= day) & (F.col("session_date") >= F.date_sub(day, days_before))
        )
        return self._kept_as("sessions", rows) if days_before == 0 else rows

    def products(self) -> DataFrame:
        return self.table(schema.SILVER_PRODUCTS)

    def quarantine(self) -> DataFrame:
        day_of = F.coalesce(F.to_date("event_time"), F.to_date("ingest_time"))
        return self.table(schema.QUARANTINE).where(day_of == F.lit(self.day))

    def has_activity(self) -> bool:
        """Whether the day has a page view, an order line or a session (one query for the three)."""
        ones = [table.select(F.lit(1)) for table in (self.page_views(), self.purchases(), self.sessions())]
        return not ones[0].union(ones[1]).union(ones[2]).isEmpty()
