"""A micro-batch costs the same however large the tables and however many files earlier batches
added to its day: the MERGE lookups read only the files whose partition times meet the batch's own
rows', and a session update writes delete files instead of whole data files again. In process,
against the test lake."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from shopstream import lake, schema
from shopstream.spark.streaming import job
from shopstream.spark.streaming import transforms as T
from tests.streaming.test_transforms import KAFKA_SCHEMA, T0, event

pytestmark = pytest.mark.spark

DAY_A, DAY_B = T0.date(), T0.date() + dt.timedelta(days=4)
# The Kafka time of these records is T0: the events of day B lie four days after it.
WINDOW = T.TimeWindow(max_age_days=365, max_lead_seconds=10 * 86_400)


class NoProgress:
    def flush(self, spark) -> int:
        return 0


def day_batch(spark, day: dt.date, first_offset: int, names: list[str], hours: int = 0):
    """Page views of session `day` on `day` (at T0's time of day, or `hours` later: then the ids name the
    hours), one rejected and one late, each on raw-events and again on page-views (which the job does not
    read: raw-events carries every event)."""
    seconds = (day - DAY_A).days * 86_400 + hours * 3600
    key = f"{day}+{hours}h" if hours else f"{day}"
    payloads = [
        event("page_view", seconds + n, event_id=f"{key}-{name}", session_id=f"s-{key}", page_type="home", page_url="/")
        for n, name in enumerate(names)
    ]
    payloads.append(event("page_view", seconds, event_id=f"{key}-odd", page_type="basement", page_url="/"))
    payloads.append(
        event("page_view", seconds, sent_after=4000, event_id=f"{key}-late", page_type="home", page_url="/")
    )
    items = [(topic, p) for p in payloads for topic in (schema.TOPIC_PAGE_VIEWS, schema.TOPIC_RAW_EVENTS)]
    rows = [
        (b"u1", json.dumps(p).encode(), topic, 0, first_offset + n, T0.replace(tzinfo=None))
        for n, (topic, p) in enumerate(items)
    ]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


@contextmanager
def files_of_day_gone(spark, day: dt.date):
    """Every data file of `day`'s partitions moved away: reading one fails, metadata still lists it."""
    moved = []
    for name in (schema.BRONZE_EVENTS, schema.SILVER_PAGE_VIEWS, schema.QUARANTINE, schema.SILVER_USER_SESSIONS):
        field = f"partition.{schema.TABLES[name].partition_day_of}_day"  # Iceberg's name of a days() partition
        files = spark.sql(f"SELECT file_path FROM {lake.table_ref(name)}.files WHERE {field} = DATE '{day}'")
        paths = [Path(row.file_path.removeprefix("file:")) for row in files.collect()]
        assert paths, f"{name} has no file of {day}"
        for path in paths:
            moved.append((path, path.with_name(path.name + ".gone")))
            shutil.move(*moved[-1])
    try:
        yield
    finally:
        for path, aside in moved:
            shutil.move(aside, path)


def test_a_batch_reads_only_the_hours_of_its_rows_and_updates_sessions_with_delete_files(empty_lake):
    spark = empty_lake
    writer = job.BatchWriter(1800, WINDOW, NoProgress())
    writer(day_batch(spark, DAY_A, 0, ["a1", "a2"]), 0)
    day_b = day_batch(spark, DAY_B, 100, ["b1", "b2"])
    writer(day_b, 1)
    sessions = lake.table_ref(schema.SILVER_USER_SESSIONS)
    with files_of_day_gone(spark, DAY_A):
        writer(day_b.union(day_batch(spark, DAY_B, 200, ["b3"])), 2)  # a replay of day B and one more view

    views = sorted(r.event_id for r in spark.table(lake.table_ref(schema.SILVER_PAGE_VIEWS)).collect())
    assert views == [
        f"{DAY_A}-a1",
        f"{DAY_A}-a2",
        f"{DAY_A}-late",
        f"{DAY_B}-b1",
        f"{DAY_B}-b2",
        f"{DAY_B}-b3",
        f"{DAY_B}-late",
    ]
    assert spark.table(lake.table_ref(schema.BRONZE_EVENTS)).count() == 4 + 4 + 3
    reasons = [r.reason for r in spark.table(lake.table_ref(schema.QUARANTINE)).collect()]
    # The day-B record rejected again at new offsets is a new Kafka record; the late event is one row.
    assert sorted(reasons) == sorted([schema.REASON_UNKNOWN_VALUE] * 3 + [schema.REASON_LATE] * 2)
    (session_b,) = spark.table(sessions).where(f"session_id = 's-{DAY_B}'").collect()
    assert session_b.page_views == 3
    (summary,) = spark.sql(f"SELECT summary FROM {sessions}.snapshots ORDER BY committed_at DESC LIMIT 1").first()
    assert int(summary["added-delete-files"]) >= 1 and "deleted-data-files" not in summary

    # A batch of on-time page views only runs the steps it has rows for, silver_page_views first.
    writer(day_batch(spark, DAY_B, 300, ["b4"]).where("offset < 302"), 3)
    assert writer.steps is not None and list(writer.steps.seconds) == [
        "read and parse",
        "page views",
        "bronze",
        "sessions",
        "progress",
    ]

    # Eight hours later on day B, beyond the span of any session: the batch reads no file stored so far,
    # neither in the lookups of its writes nor in the session rebuild, and writes every table.
    with files_of_day_gone(spark, DAY_B):
        writer(day_batch(spark, DAY_B, 400, ["c1"], hours=8), 4)
    later = f"event_id LIKE '{DAY_B}+8h-%'"
    views = spark.table(lake.table_ref(schema.SILVER_PAGE_VIEWS)).where(later).collect()
    assert sorted(r.event_id for r in views) == [f"{DAY_B}+8h-c1", f"{DAY_B}+8h-late"]
    assert spark.table(lake.table_ref(schema.BRONZE_EVENTS)).where(later).count() == 3
    reasons = [r.reason for r in spark.table(lake.table_ref(schema.QUARANTINE)).where(later).collect()]
    assert sorted(reasons) == sorted([schema.REASON_UNKNOWN_VALUE, schema.REASON_LATE])
    (session_later,) = spark.table(sessions).where(f"session_id = 's-{DAY_B}+8h'").collect()
    assert session_later.page_views == 1


def test_batch_plan_spans_each_write_by_the_hours_of_its_rows(spark):
    """Two page views and an order line at 10:00 on day A (one of them late), a rejected record
    without a usable time (filed under its Kafka time, T0), a page view at 11:01 and one on day B."""
    seconds_b = (DAY_B - DAY_A).days * 86_400
    payloads = [
        event("page_view", 10, page_type="home", page_url="/"),
        event("page_view", 20, sent_after=4000, page_type="home", page_url="/"),
        event(
            "purchase",
            30,
            order_id="o1",
            product_id="p1",
            quantity=1,
            unit_price=5,
            discount=0,
            payment_method="card",
            currency="USD",
        ),
        "not json",
        event("page_view", 3700, page_type="home", page_url="/"),
        event("add_to_cart", seconds_b + 5, product_id="p1", quantity=1, unit_price=5),
    ]
    rows = [
        (
            b"u1",
            (p if isinstance(p, str) else json.dumps(p)).encode(),
            schema.TOPIC_RAW_EVENTS,
            0,
            n,
            T0.replace(tzinfo=None),
        )
        for n, p in enumerate(payloads)
    ]
    records = T.parse_and_validate(spark.createDataFrame(rows, KAFKA_SCHEMA), WINDOW)
    plan = job.BatchPlan.of(records, 1800)

    def at(seconds: int) -> int:  # unix microseconds
        return int((T0 + dt.timedelta(seconds=seconds)).timestamp()) * 1_000_000

    # Hours 10 and 11 of day A are consecutive: one span. Day B's hour is a span of its own.
    assert plan.spans == {
        "records": [(at(0), at(3700)), (at(seconds_b + 5),) * 2],
        "page_views": [(at(10), at(3700)), (at(seconds_b + 5),) * 2],
        "purchases": [(at(30), at(30))],
        "rejected": [(at(0), at(0))],
        "late": [(at(20), at(20))],
    }
    # The late page view (at T0 + 20 s) is not on time: the span runs from the first view to day B's.
    assert (plan.first_on_time, plan.last_on_time) == (
        (T0 + dt.timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S.000000"),
        (T0 + dt.timedelta(seconds=seconds_b + 5)).strftime("%Y-%m-%d %H:%M:%S.000000"),
    )


def test_spans_make_a_predicate_of_literals(spark):
    times = (
        "0000-01-01 00:00:00",
        "2026-11-01 23:59:59",
        "2026-11-02 00:00:00",
        "2026-11-05 12:00:00",
        "9999-12-31 23:59:59",
    )  # through SQL: Python's datetime holds neither year 0 nor year 1 everywhere

    def values(*texts: str):
        return spark.sql("SELECT * FROM VALUES " + ", ".join(f"(TIMESTAMP '{t}')" for t in texts) + " AS t(event_time)")

    rows = values(*times).selectExpr(
        f"floor(unix_micros(event_time) / {T.HOUR_MICROS}) AS hour", "unix_micros(event_time) AS at"
    )
    hours = [(row.hour, row.at, row.at) for row in rows.collect()]
    at = dict(zip(times, (at for _, at, _ in hours), strict=True))
    # 23:00 on November 1st and midnight after it are consecutive hours: one span.
    assert job.spans_of(hours) == [
        (at["0000-01-01 00:00:00"],) * 2,
        (at["2026-11-01 23:59:59"], at["2026-11-02 00:00:00"]),
        (at["2026-11-05 12:00:00"],) * 2,
        (at["9999-12-31 23:59:59"],) * 2,
    ]
    predicate = job.within("event_time", job.spans_of(hours))
    assert predicate.count(" OR ") == 3 and predicate.startswith("((t.event_time BETWEEN timestamp_micros(")

    def matching(*texts: str) -> int:
        values(*texts).createOrReplaceTempView("t")
        return spark.sql(f"SELECT count(*) FROM t WHERE {predicate}").first()[0]

    assert matching(*times) == len(times)
    # Every span covers its times exactly: a microsecond after one or before one, or between two, is outside.
    assert matching("2026-11-02 00:00:00.000001", "2026-11-05 11:59:59.999999", "2026-11-03 00:00:00") == 0
