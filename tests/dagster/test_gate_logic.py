"""The completeness gate's and the recompute sensor's pure logic, with hand-worked values: no broker,
no Spark, no Dagster instance (one pyiceberg catalog on a temporary folder)."""

import datetime as dt

import pyarrow as pa

from dagster_repo.monitoring.completeness import (
    Completeness,
    Lagging,
    assess,
    cutoff,
    dependent_days,
    silver_versions,
    stale_tables,
)
from shopstream import lake, schema

DAY = dt.date(2026, 3, 9)
CUTOFF = dt.datetime(2026, 3, 10, 0, 30, tzinfo=dt.UTC)
LATER = CUTOFF + dt.timedelta(hours=1)


def test_the_cutoff_is_the_end_of_the_day_in_utc_plus_the_lateness():
    assert cutoff(DAY, 1800) == CUTOFF
    assert cutoff(dt.date(2026, 12, 31), 0) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_complete_when_every_partition_is_read_past_the_first_record_after_the_cutoff():
    ends = {"raw-events": {"0": 120, "1": 90}, "products": {"0": 40}}
    at_cutoff = {"raw-events": {"0": 100, "1": 80}, "products": {"0": None}}  # products: nothing since
    consumed = {"raw-events": {"0": 100, "1": 85}, "products": {"0": 40}}
    result = assess(DAY, CUTOFF, consumed, at_cutoff, ends, LATER)
    assert result.complete and result.lagging == ()
    assert result.reason() == "2026-03-09 is complete: the stream has read past 2026-03-10 00:30 UTC"


def test_lagging_partitions_are_named_with_what_was_read_and_what_is_needed():
    ends = {"raw-events": {"0": 120, "1": 90, "10": 5}, "products": {"0": 40}}
    at_cutoff = {"raw-events": {"0": 100, "1": None, "10": None}, "products": {"0": None}}
    consumed = {"raw-events": {"0": 99, "1": 90}, "products": {"0": 39}}  # partition 10 never read
    result = assess(DAY, CUTOFF, consumed, at_cutoff, ends, LATER)
    assert not result.complete
    assert result.lagging == (
        Lagging("products", "0", 39, 40),
        Lagging("raw-events", "0", 99, 100),
        Lagging("raw-events", "10", 0, 5),
    )
    assert result.reason() == (
        "2026-03-09 is not complete (the stream has not read past 2026-03-10 00:30 UTC): "
        "products/0 read to offset 39, needs 40; raw-events/0 read to offset 99, needs 100; "
        "raw-events/10 read to offset 0, needs 5"
    )


def test_a_stream_read_to_the_end_waits_for_the_cutoff_itself():
    ends = {"raw-events": {"0": 120}}
    consumed = {"raw-events": {"0": 120}}
    before = assess(DAY, CUTOFF, consumed, {"raw-events": {"0": None}}, ends, CUTOFF - dt.timedelta(minutes=5))
    assert not before.complete and before.problem == "the cutoff is 0:05:00 away"
    assert assess(DAY, CUTOFF, consumed, {"raw-events": {"0": None}}, ends, CUTOFF).complete


def test_no_progress_at_all_is_not_complete():
    result = assess(DAY, CUTOFF, None, {}, {"raw-events": {"0": 0}}, LATER)
    assert result == Completeness(DAY, CUTOFF, problem="the streaming job has recorded no progress yet")


def test_a_day_depends_on_its_trailing_week_and_itself():
    # not on the day after, which the stream writes all day after this day's gold ran
    days = dependent_days(DAY)
    assert (days[0], days[-1], len(days)) == (dt.date(2026, 3, 2), DAY, 8)


def version(records: int, snapshot: str, rewrite: bool = False) -> dict:
    return {"records": records, "snapshot_id": snapshot, "rewrite": rewrite}


def test_stale_tables_are_the_changed_day_partitions():
    recorded = {
        "silver_purchases": {"2026-03-09": version(10, "1"), "2026-03-10": version(2, "1")},
        "silver_user_sessions": {"2026-03-09": version(4, "1")},
    }
    assert stale_tables(recorded, recorded) == []
    current = {
        # late lines of the 9th: more rows
        "silver_purchases": {"2026-03-09": version(12, "2"), "2026-03-10": version(2, "1")},
        # a session rebuilt with the same count, by a MERGE: same rows counted, new snapshot
        "silver_user_sessions": {"2026-03-09": version(4, "3"), "2026-03-08": version(1, "3")},
        # a table this gold does not read (it recorded none): not its change
        "silver_page_views": {"2026-03-09": version(40, "3")},
    }
    assert stale_tables(recorded, current) == [
        "silver_purchases 2026-03-09",
        "silver_user_sessions 2026-03-08",
        "silver_user_sessions 2026-03-09",
    ]


def test_a_compaction_alone_is_not_a_change():
    recorded = {"silver_page_views": {"2026-03-09": version(10, "1")}}
    assert stale_tables(recorded, {"silver_page_views": {"2026-03-09": version(10, "7", rewrite=True)}}) == []
    # a compaction after rows were added: the count tells
    assert stale_tables(recorded, {"silver_page_views": {"2026-03-09": version(11, "7", rewrite=True)}}) == [
        "silver_page_views 2026-03-09"
    ]


def test_a_table_not_partitioned_by_day_has_one_version_for_every_day(tmp_path):
    """Silver made by another tool (the batch bench appends with pyiceberg, unpartitioned): any
    change to the table is a change to each day."""
    catalog = lake.iceberg_catalog(lake.LakeSettings.local(tmp_path))
    catalog.create_namespace(schema.NAMESPACE)
    rows = pa.table({"event_id": ["e1", "e2"]})
    table = catalog.create_table(schema.TABLES[schema.SILVER_PAGE_VIEWS].qualified, rows.schema)
    days = [DAY, DAY + dt.timedelta(days=1)]
    assert silver_versions(catalog, days, [schema.SILVER_PAGE_VIEWS]) == {
        schema.SILVER_PAGE_VIEWS: {d.isoformat(): {"records": 0, "snapshot_id": "", "rewrite": False} for d in days}
    }
    table.append(rows)
    snapshot = str(table.current_snapshot().snapshot_id)
    version = {"records": 2, "snapshot_id": snapshot, "rewrite": False}
    assert silver_versions(catalog, days, [schema.SILVER_PAGE_VIEWS]) == {
        schema.SILVER_PAGE_VIEWS: {d.isoformat(): version for d in days}
    }
