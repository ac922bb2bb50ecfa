"""Maintenance drops the audit branches that killed gold runs left behind, and only those: a branch
made within the orphan threshold may still be being written. In process, against the test lake."""

from __future__ import annotations

import datetime as dt

import pytest

from shopstream import lake, schema
from shopstream.spark import iceberg, maintenance

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 11, 2)
NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)


def branches(spark, name: str) -> list[str]:
    return sorted(r.name for r in spark.sql(f"SELECT name FROM {lake.table_ref(name)}.refs").collect())


def test_audit_branches_older_than_the_orphan_threshold_are_dropped_others_kept(empty_lake):
    spark = empty_lake
    name = schema.GOLD_SALES_SUMMARY
    iceberg.ensure_tables(spark, [name, schema.SILVER_PAGE_VIEWS])
    abandoned = iceberg.audit_branch(DAY, NOW - dt.timedelta(hours=80))
    in_flight = iceberg.audit_branch(DAY, NOW - dt.timedelta(hours=1))
    assert abandoned.startswith("audit_20261102_at_20261124T040000_")
    for branch in (abandoned, in_flight):
        iceberg.create_branches(spark, [name], branch)
    spark.sql(f"ALTER TABLE {lake.table_ref(name)} CREATE BRANCH `audit_by_hand`")  # not the job's: kept
    assert iceberg.audit_branches_made_before(spark, name, NOW) == sorted([abandoned, in_flight])

    report = maintenance.maintain(
        spark,
        [name, schema.SILVER_PAGE_VIEWS],
        closed=DAY,
        expire_before=NOW - dt.timedelta(days=7),
        retain_last=10,
        orphans_before=NOW - dt.timedelta(hours=72),
    )
    assert report[name]["abandoned_audit_branches_dropped"] == 1
    assert "abandoned_audit_branches_dropped" not in report[schema.SILVER_PAGE_VIEWS]  # not a gold table
    assert branches(spark, name) == sorted(["main", in_flight, "audit_by_hand"])
