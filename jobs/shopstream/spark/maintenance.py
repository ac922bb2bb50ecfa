"""Iceberg table maintenance: compact the small files of closed day partitions, compact the
streaming tables' manifests, drop the audit branches killed gold runs left behind, expire old
snapshots, remove orphan files.

    python -m shopstream maintenance [--closed-before YYYY-MM-DD] [--tables t1,t2] ...

A partition is closed once no event can still arrive for it: the streaming job quarantines events
later than its allowed lateness, so every day before (now - lateness) is closed, and compaction
touches only those days. Today's files, which the streaming writer is still adding to, are never
rewritten. Snapshot expiry keeps the newest snapshots and everything younger than the retention,
so running readers and the streaming checkpoint's commits stay valid; orphan removal only deletes
files older than its own threshold (days by default), so a write in flight is never mistaken for
an orphan.

In a cluster (PostgreSQL catalog) maintenance runs while the stream commits. A commit that loses
to one of the stream's (a late session update writing delete files into a closed day, a manifest
merged away) is done again from the new table state, after a pause that doubles, a few times at
most; then the run fails with one line naming the table and the cause. Compaction commits part by
part (partial progress: up to ten commits, no file group spanning two days), so a conflict costs
only its part's work. On the embedded SQLite catalog one writer at a time stays the rule: run
maintenance while no local stream is running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from shopstream import catalog, lake, results, schema, settings
from shopstream.cli import add_result_file
from shopstream.lake import LakeSettings
from shopstream.spark import errors, iceberg

# Tables that have a day partition to compact, with the column the day comes from.
COMPACTED = {name: table.partition_day_of for name, table in schema.TABLES.items() if table.partition_day_of}
# The stream commits to these every micro-batch, each commit adding a manifest.
MANIFESTS_REWRITTEN = frozenset(catalog.STREAMING.writes)
# Partial progress commits the compacted file groups (a group never spans two days) in up to ten
# commits, so a conflict loses only its own commit's groups; allowing no failed commit turns the
# lost ones into an error, which the retry answers by compacting what is still small.
COMPACTION_OPTIONS = {
    "min-input-files": "2",
    "partial-progress.enabled": "true",
    "partial-progress.max-commits": "10",
    "partial-progress.max-failed-commits": "0",
}
# A merge-on-read table's updates leave delete files: a closed day's data file with any is rewritten
# with them applied, and delete files that then point at no live row are dropped.
MERGE_ON_READ_COMPACTION = {"delete-file-threshold": "1", "remove-dangling-deletes": "true"}
# A step whose commit conflicts is tried 4 times, 5, 10 and 20 s apart: room for a few micro-batches.
DEFAULT_RETRY = errors.ConflictRetry(attempts=4, first_pause=5.0)


def closed_before(now: dt.datetime, allowed_lateness_seconds: int) -> dt.date:
    """The first day that may still receive events; every earlier day is closed."""
    return (now - dt.timedelta(seconds=allowed_lateness_seconds)).date()


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("TIMESTAMP '%Y-%m-%d %H:%M:%S'")


def closed_days(name: str, closed: dt.date) -> str:
    """The filter of `name`'s rows in days before `closed`, on its partition column."""
    column = COMPACTED[name]
    if schema.TABLES[name].column(column).type == schema.TIMESTAMP:
        return f"{column} < TIMESTAMP '{closed.isoformat()} 00:00:00'"
    return f"{column} < '{closed.isoformat()}'"


def compaction_options(name: str) -> dict[str, str]:
    if lake.table_properties(name).get("write.merge.mode") == "merge-on-read":
        return {**COMPACTION_OPTIONS, **MERGE_ON_READ_COMPACTION}
    return dict(COMPACTION_OPTIONS)


def _map(options: dict[str, str]) -> str:
    return "map(" + ", ".join(f"'{key}', '{value}'" for key, value in options.items()) + ")"


def maintain_table(
    spark,
    name: str,
    closed: dt.date,
    expire_before: dt.datetime,
    retain_last: int,
    orphans_before: dt.datetime,
    object_storage: bool,
    retry: errors.ConflictRetry,
) -> dict:
    """The procedures on one table, each commit retried on conflict; returns its figures (a retried
    step's are those of its last attempt)."""
    ident = schema.TABLES[name].qualified
    figures: dict = {"conflicts_retried": 0}

    def commit(procedure: str, arguments: str):
        row, conflicts = errors.retry_on_conflict(
            lambda: spark.sql(f"CALL {lake.CATALOG}.system.{procedure}(table => '{ident}', {arguments})").first(),
            f"maintenance {name} {procedure}",
            retry,
        )
        figures["conflicts_retried"] += conflicts
        return row

    if name in COMPACTED:
        row = commit(
            "rewrite_data_files",
            f'where => "{closed_days(name, closed)}", options => {_map(compaction_options(name))}',
        )
        figures["rewritten_files"] = row["rewritten_data_files_count"]
        figures["added_files"] = row["added_data_files_count"]
        figures["removed_delete_files"] = row["removed_delete_files_count"]
    if name in MANIFESTS_REWRITTEN:
        row = commit("rewrite_manifests", "use_caching => false")
        figures["rewritten_manifests"] = row["rewritten_manifests_count"]
        figures["added_manifests"] = row["added_manifests_count"]
    if name in catalog.GOLD.writes:
        # A gold run killed between writing its audit branch and dropping it leaves the branch, whose
        # snapshots expiry would otherwise keep forever. One made before the orphan threshold is no
        # write in flight.
        abandoned = iceberg.audit_branches_made_before(spark, name, orphans_before)
        for branch in abandoned:
            iceberg.drop_branch(spark, name, branch)
        figures["abandoned_audit_branches_dropped"] = len(abandoned)
    row = commit("expire_snapshots", f"older_than => {_timestamp(expire_before)}, retain_last => {retain_last}")
    figures["expired_data_files"] = row["deleted_data_files_count"]
    figures["expired_delete_files"] = row["deleted_position_delete_files_count"]
    figures["expired_manifest_lists"] = row["deleted_manifest_lists_count"]
    # No commit: it deletes files that no snapshot references and that are older than any write in flight.
    listing = ", prefix_listing => true" if object_storage else ""
    figures["orphan_files_removed"] = spark.sql(
        f"CALL {lake.CATALOG}.system.remove_orphan_files(table => '{ident}',"
        f" older_than => {_timestamp(orphans_before)}{listing})"
    ).count()
    return figures


def maintain(
    spark,
    tables: list[str],
    closed: dt.date,
    expire_before: dt.datetime,
    retain_last: int,
    orphans_before: dt.datetime,
    object_storage: bool = False,
    retry: errors.ConflictRetry = DEFAULT_RETRY,
) -> dict:
    """Maintain every existing table of `tables`; returns per-table figures. Raises
    errors.CommitConflict when a step still conflicts after `retry.attempts`.

    On object storage (s3://) orphan files are found by listing the table's prefix through its own
    FileIO: Hadoop has no file system for Iceberg's s3:// paths."""
    report: dict[str, dict] = {}
    for name in tables:
        if not iceberg.table_exists(spark, name):
            continue
        report[name] = maintain_table(
            spark, name, closed, expire_before, retain_last, orphans_before, object_storage, retry
        )
        print(f"maintenance {name}: {report[name]}", flush=True)
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
        help="remove unreferenced files, and drop the gold job's audit branches, older than this (default 72; "
        "never below the longest write)",
    )
    p.add_argument(
        "--conflict-attempts",
        type=int,
        default=DEFAULT_RETRY.attempts,
        help="attempts of a step whose commit conflicts with a concurrent writer's (default 4)",
    )
    p.add_argument(
        "--conflict-pause-seconds",
        type=float,
        default=DEFAULT_RETRY.first_pause,
        help="pause before a step's second attempt, doubling for each further one up to 60 s (default 5)",
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
    if args.conflict_attempts < 1 or args.conflict_pause_seconds < 0:
        print("error: --conflict-attempts below 1 or a negative --conflict-pause-seconds", file=sys.stderr)
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
            retry=errors.ConflictRetry(args.conflict_attempts, args.conflict_pause_seconds),
        )
    except errors.CommitConflict as conflict:
        print(f"error: maintenance: {conflict}", file=sys.stderr)
        return 1
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
