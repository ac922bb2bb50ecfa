"""Maintenance beside a live writer: both commit to silver_user_sessions at once, a real Iceberg
commit conflict happens and is retried, and no row is lost or duplicated. In process, against the
test lake: two threads of one SparkSession share its catalog, the way a cluster's stream and
maintenance share the PostgreSQL catalog (the SQLite default keeps one writer across processes).

The race is made certain, not likely: the writer's first MERGE, its snapshot already pinned, waits
at a gate inside its own Spark job until maintenance has planned its compaction of the same day, so
both start from one snapshot and whichever commits second conflicts."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopstream import lake, schema
from shopstream.spark import errors, iceberg, maintenance
from shopstream.spark.streaming import job

pytestmark = pytest.mark.spark

UTC = dt.UTC
DAY_1, DAY_2, OPEN_DAY = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
SESSIONS = lake.table_ref(schema.SILVER_USER_SESSIONS)
LATER_ROUNDS = 5
QUICK_RETRY = errors.ConflictRetry(attempts=6, first_pause=0.5)


def sessions(spark, ids: list[str], start: dt.datetime, page_views: int):
    """Session rows as the streaming job's rebuild makes them, `page_views` each."""
    rows = [
        (
            session_id,
            f"u-{session_id}",
            start,
            start + dt.timedelta(minutes=10),
            600,
            "mobile",
            "direct",
            "DE",
            page_views,
            1,
            0,
            0,
            Decimal("0.00"),
            False,
            start.date(),
        )
        for session_id in ids
    ]
    return spark.createDataFrame(rows, schema.spark_schema(schema.USER_SESSIONS.columns))


def between(first: dt.datetime, last: dt.datetime) -> str:
    return f"BETWEEN TIMESTAMP '{first:%Y-%m-%d %H:%M:%S}' AND TIMESTAMP '{last:%Y-%m-%d %H:%M:%S}'"


def gated(rows, gate: Path):
    """`rows`, whose computation waits until the file `gate` exists (and says so in `gate`.waiting)."""
    waiting, opened = str(gate) + ".waiting", str(gate)

    def pass_when_open(value):
        import os
        import time

        open(waiting, "w").close()
        while not os.path.exists(opened):
            time.sleep(0.05)
        return value

    return rows.withColumn("page_views", F.udf(pass_when_open, T.LongType())("page_views"))


def wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def in_job_group(spark, group: str, work):
    """`work`, run with its Spark jobs in `group` (unless Iceberg sets a group of its own)."""

    def run():
        spark.sparkContext.setJobGroup(group, group)
        return work()

    return run


def test_maintenance_and_a_concurrent_writer_both_succeed_past_a_real_conflict(empty_lake, tmp_path, capsys):
    spark = empty_lake
    iceberg.ensure_tables(spark, [schema.SILVER_USER_SESSIONS])
    # Two closed days of four small commits each: 200 sessions with one page view each.
    for day in (DAY_1, DAY_2):
        for commit in range(4):
            ids = [f"{day}-{commit * 25 + n}" for n in range(25)]
            sessions(spark, ids, dt.datetime.combine(day, dt.time(22), UTC), 1).writeTo(SESSIONS).append()
    before_writes = dt.datetime.now(UTC)
    gate = tmp_path / "gate"

    writer_conflicts: list[int] = []
    writer_lines: list[str] = []

    def merge(rows, around: str, label: str) -> None:
        _, conflicts = errors.retry_on_conflict(
            lambda: job._merge_sessions(rows, around), f"writer {label}", QUICK_RETRY, log=writer_lines.append
        )
        writer_conflicts.append(conflicts)

    def write() -> None:
        # Round 0: a late update of ten sessions of the closed DAY_2 (delete files into the day being
        # compacted) and five new sessions past midnight, behind the gate.
        late = sessions(spark, [f"{DAY_2}-{n}" for n in range(10)], dt.datetime.combine(DAY_2, dt.time(22), UTC), 10)
        night = dt.datetime.combine(OPEN_DAY, dt.time(1), UTC)
        new = sessions(spark, [f"{OPEN_DAY}-{n}" for n in range(5)], night, 1)
        merge(gated(late.unionByName(new), gate), between(night - dt.timedelta(hours=9), night), "round 0")
        # Then the open day only: the sessions of the round before get 3 page views, five new start.
        for round_ in range(1, LATER_ROUNDS + 1):
            updated = [f"{OPEN_DAY}-{n}" for n in range(5 * (round_ - 1), 5 * round_)]
            started = [f"{OPEN_DAY}-{n}" for n in range(5 * round_, 5 * (round_ + 1))]
            rows = sessions(spark, updated, night, 3).unionByName(sessions(spark, started, night, 1))
            merge(rows, between(night - dt.timedelta(hours=1), night), f"round {round_}")

    def maintain(expire_before: dt.datetime, retain_last: int) -> dict:
        return maintenance.maintain_table(
            spark,
            schema.SILVER_USER_SESSIONS,
            closed=OPEN_DAY,
            expire_before=expire_before,
            retain_last=retain_last,
            orphans_before=dt.datetime.now(UTC) - dt.timedelta(days=1),
            object_storage=False,
            retry=QUICK_RETRY,
        )

    passes: list[dict] = []
    with ThreadPoolExecutor(max_workers=2) as threads:
        try:
            writer = threads.submit(in_job_group(spark, "writer", write))
            wait_until(lambda: Path(f"{gate}.waiting").exists(), "the writer's first MERGE at the gate")
            # While the stream writes, only snapshots older than its writes may go (a week, in production).
            maintainer = threads.submit(lambda: passes.append(maintain(before_writes, retain_last=1)))
            tracker = spark.sparkContext.statusTracker()
            # A Spark job not the writer's rewrites file groups: the compaction is planned, on the
            # writer's snapshot.
            wait_until(
                lambda: set(tracker.getActiveJobsIds()) - set(tracker.getJobIdsForGroup("writer")),
                "maintenance's rewrite job",
            )
        finally:
            gate.touch()  # on a failure too: the writer must not wait for ever
        maintainer.result(timeout=600)
        writer.result(timeout=600)
    concurrent_lines = capsys.readouterr().out

    # Whichever lost the race of the writer's first MERGE and the compaction retried it; every
    # retry is counted and logged with the table (or writer round) and the cause.
    maintenance_lines = [line for line in concurrent_lines.splitlines() if "commit conflict on attempt" in line]
    assert len(maintenance_lines) == passes[0]["conflicts_retried"]
    assert all(line.startswith("maintenance silver_user_sessions ") for line in maintenance_lines)
    assert len(writer_lines) == sum(writer_conflicts) and len(writer_conflicts) == 1 + LATER_ROUNDS
    assert all("ValidationException" in line for line in writer_lines)
    compaction_lines = [line for line in maintenance_lines if " rewrite_data_files: " in line]
    round_0_lines = [line for line in writer_lines if line.startswith("writer round 0: ")]
    assert len(compaction_lines) + len(round_0_lines) >= 1, (maintenance_lines, writer_lines)

    # With the stream stopped, a last pass compacts the closed days with their deletes applied and
    # expires every older snapshot.
    final_pass = dt.datetime.now(UTC)
    final = maintain(final_pass, retain_last=1)
    assert final["conflicts_retried"] == 0

    # 200 seeded + 5 new per round; DAY_2's ten late updates at 10, each round's updated five at 3.
    per_day = {
        row.day: (row.sessions, row.distinct_ids, row.page_views)
        for row in spark.sql(f"""
            SELECT session_date AS day, count(*) AS sessions, count(DISTINCT session_id) AS distinct_ids,
                   sum(page_views) AS page_views
            FROM {SESSIONS} GROUP BY session_date""").collect()
    }
    assert per_day == {DAY_1: (100, 100, 100), DAY_2: (100, 100, 190), OPEN_DAY: (30, 30, 80)}
    files = spark.sql(f"""
        SELECT partition.session_start_day AS day, content, count(*) AS files
        FROM {SESSIONS}.files GROUP BY 1, 2""").collect()
    closed_day_files = {(row.day, row.content): row.files for row in files if row.day < OPEN_DAY}
    assert closed_day_files == {(DAY_1, 0): 1, (DAY_2, 0): 1}  # one data file each, no delete file
    older = spark.sql(
        f"SELECT count(*) FROM {SESSIONS}.snapshots WHERE committed_at < {maintenance._timestamp(final_pass)}"
    )
    assert older.first()[0] == 0
