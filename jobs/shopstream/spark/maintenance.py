"""Iceberg table maintenance: compact the small files of closed day partitions, expire old
snapshots, remove orphan files.

    python -m shopstream maintenance [--closed-before YYYY-MM-DD] [--tables t1,t2] ...

A partition is closed once no event can still arrive for it: the streaming job quarantines events
later than its allowed lateness, so every day before (now - lateness) is closed, and compaction
touches only those days. Today's files, which the streaming writer is still adding to, are never
rewritten. Snapshot expiry keeps the newest snapshots and everything younger than the retention,
so running readers and the streaming checkpoint's commits stay valid; orphan removal only deletes
files older than its own threshold (days by default), so a write in flight is never mistaken for
an orphan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from shopstream import lake, results, schema, settings
from shopstream.cli import add_result_file
from shopstream.lake import LakeSettings
from shopstream.spark import iceberg

# Tables that have a day partition to compact, with the column the day comes from.
COMPACTED = {name: table.partition_day_of for name, table in schema.TABLES.items() if table.partition_day_of}


def closed_before(now: dt.datetime, allowed_lateness_seconds: int) -> dt.date:
    """The first day that may still receive events; every earlier day is closed."""
    return (now - dt.timedelta(seconds=allowed_lateness_seconds)).date()


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("TIMESTAMP '%Y-%m-%d %H:%M:%S'")


def maintain(
    spark,
    tables: list[str],
    closed: dt.date,
    expire_before: dt.datetime,
    retain_last: int,
    orphans_before: dt.datetime,
    object_storage: bool = False,
) -> dict:
    """Run the three procedures on every existing table; returns per-table figures.

    On object storage (s3://) orphan files are found by listing the table's prefix through its own
    FileIO: Hadoop has no file system for Iceberg's s3:// paths."""
    report: dict[str, dict] = {}
    listing = ", prefix_listing => true" if object_storage else ""
    for name in tables:
        if not iceberg.table_exists(spark, name):
            continue
        ident = schema.TABLES[name].qualified
        figures: dict = {}
        if name in COMPACTED:
            where = f"{COMPACTED[name]} < '{closed.isoformat()}'"
            if schema.TABLES[name].column(COMPACTED[name]).type == schema.TIMESTAMP:
                where = f"{COMPACTED[name]} < TIMESTAMP '{closed.isoformat()} 00:00:00'"
            row = spark.sql(
                f"CALL {lake.CATALOG}.system.rewrite_data_files(table => '{ident}', where => \"{where}\", "
                f"options => map('min-input-files', '2'))"
            ).first()
            figures["rewritten_files"] = row["rewritten_data_files_count"]
            figures["added_files"] = row["added_data_files_count"]
        row = spark.sql(
            f"CALL {lake.CATALOG}.system.expire_snapshots(table => '{ident}', "
            f"older_than => {_timestamp(expire_before)}, retain_last => {retain_last})"
        ).first()
        figures["expired_data_files"] = row["deleted_data_files_count"]
        figures["expired_manifest_lists"] = row["deleted_manifest_lists_count"]
        orphans = spark.sql(
            f"CALL {lake.CATALOG}.system.remove_orphan_files(table => '{ident}',"
            f" older_than => {_timestamp(orphans_before)}{listing})"
        ).count()
        figures["orphan_files_removed"] = orphans
        report[name] = figures
        print(f"maintenance {name}: {figures}", flush=True)
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shopstream maintenance",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument(
        "--tables",
        default=",".join(schema.TABLES),
        help="comma-separated tables to maintain (default: every table of the lake)",
    )
    p.add_argument(
        "--closed-before",
        type=dt.date.fromisoformat,
        help="compact only days before this one (default: the day of now minus the allowed lateness)",
    )
    settings.ALLOWED_LATENESS.add_argument(p, "--allowed-lateness", type=int)
    p.add_argument(
        "--expire-older-than-hours",
        type=float,
        default=168.0,
        help="expire snapshots older than this (default 168: a week)",
    )
    p.add_argument("--retain-last", type=int, default=10, help="always keep this many newest snapshots (default 10)")
    p.add_argument(
        "--orphan-older-than-hours",
        type=float,
        default=72.0,
        help="remove unreferenced files older than this (default 72; never below the longest write)",
    )
    add_result_file(p, "the figures")
    LakeSettings.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    unknown = sorted(set(args.tables.split(",")) - set(schema.TABLES))
    if unknown:
        print(f"error: unknown table(s) {', '.join(unknown)}; tables: {', '.join(schema.TABLES)}", file=sys.stderr)
        return 2
    if args.orphan_older_than_hours < 1:
        print("error: --orphan-older-than-hours below 1 would delete files of writes in progress", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC)
    closed = args.closed_before or closed_before(now, args.allowed_lateness)
    settings = LakeSettings.from_args(args)
    started = time.monotonic()
    spark = iceberg.spark_session(settings, "shopstream-maintenance")
    try:
        report = maintain(
            spark,
            args.tables.split(","),
            closed,
            now - dt.timedelta(hours=args.expire_older_than_hours),
            args.retain_last,
            now - dt.timedelta(hours=args.orphan_older_than_hours),
            object_storage=settings.warehouse.startswith("s3://"),
        )
    finally:
        spark.stop()
    result = {
        "job": "maintenance",
        "closed_before": closed.isoformat(),
        "tables": report,
        "duration_seconds": round(time.monotonic() - started, 3),
    }
    results.write_result(args.result_file, settings, **result)
    print(f"maintenance: {len(report)} tables in {result['duration_seconds']:.1f}s; days before {closed} compacted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
