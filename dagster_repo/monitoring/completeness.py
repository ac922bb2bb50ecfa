"""Whether a day is complete enough for its gold, and what silver a day's gold depends on.

A day D is complete when the streaming job has provably read past the end of D plus the allowed
lateness, in Kafka's time: for every partition of every subscribed topic, everything sent before
that cutoff has been read into silver (the newest `ops_streaming_progress` row's end offsets
against Kafka's offset for the cutoff time). Events sent after it are late; they still reach
silver, and the recompute sensor re-materializes the days they change, from the silver versions
below.

The pure parts (`assess`, `stale_tables`, `dependent_days`) take values; the readers beside them
do the I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyiceberg.catalog import Catalog

from dagster_repo.monitoring import health
from shopstream import rules, schema
from shopstream.lake import LakeSettings, live_records

Offsets = Mapping[str, Mapping[str, int]]  # topic -> partition -> offset

# The silver tables whose rows the gold of a day counts, each partitioned by its day.
SILVER_DAILY = (schema.SILVER_PAGE_VIEWS, schema.SILVER_PURCHASES, schema.SILVER_USER_SESSIONS)


def cutoff(day: dt.date, allowed_lateness_seconds: int) -> dt.datetime:
    """The end of `day` (UTC) plus the allowed lateness. An order of `day` whose lines reach past
    midnight (ORDER_SPAN_DAYS) is placed within seconds, well inside the lateness, so the cutoff
    does not wait for a whole day more."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return end + dt.timedelta(seconds=allowed_lateness_seconds)


@dataclass(frozen=True)
class Lagging:
    topic: str
    partition: str
    consumed: int  # next offset the stream reads
    needed: int  # it must have read up to here

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition} read to offset {self.consumed:,}, needs {self.needed:,}"


@dataclass(frozen=True)
class Completeness:
    day: dt.date
    cutoff: dt.datetime
    lagging: tuple[Lagging, ...] = ()
    problem: str | None = None  # why it could not be measured, or what else is missing

    @property
    def complete(self) -> bool:
        return not self.lagging and self.problem is None

    def reason(self) -> str:
        if self.complete:
            return f"{self.day} is complete: the stream has read past {self.cutoff:%Y-%m-%d %H:%M} UTC"
        why = self.problem or "; ".join(str(lag) for lag in self.lagging)
        return f"{self.day} is not complete (the stream has not read past {self.cutoff:%Y-%m-%d %H:%M} UTC): {why}"


def assess(
    day: dt.date,
    day_cutoff: dt.datetime,
    consumed: Offsets | None,
    at_cutoff: Mapping[str, Mapping[str, int | None]],
    ends: Offsets,
    now: dt.datetime,
) -> Completeness:
    """`consumed`: the stream's newest end offsets (None: it never recorded progress); `at_cutoff`:
    per partition, the first offset whose record was sent at or after the cutoff (None: none yet);
    `ends`: the partitions' end offsets. A partition with nothing sent after the cutoff must have
    been read to its end, and the cutoff must have passed."""
    if consumed is None:
        return Completeness(day, day_cutoff, problem="the streaming job has recorded no progress yet")
    lagging = []
    for topic, partitions in sorted(ends.items()):
        for partition, end in sorted(partitions.items(), key=lambda item: int(item[0])):
            first_after = at_cutoff.get(topic, {}).get(partition)
            needed = end if first_after is None else first_after
            read = consumed.get(topic, {}).get(partition, 0)
            if read < needed:
                lagging.append(Lagging(topic, partition, read, needed))
    if not lagging and now < day_cutoff:
        return Completeness(day, day_cutoff, problem=f"the cutoff is {day_cutoff - now} away")
    return Completeness(day, day_cutoff, tuple(lagging))


def consumed_offsets(settings: LakeSettings, now: dt.datetime) -> Offsets | None:
    """The end offsets of the stream's newest progress row: what is in silver."""
    newest = health.newest_progress(settings, now, ("end_offsets",))
    return None if newest is None else json.loads(newest["end_offsets"] or "{}")


def measure(
    settings: LakeSettings, bootstrap_servers: str, topics: Iterable[str], day: dt.date, lateness: int, now: dt.datetime
) -> Completeness:
    """`assess` with the progress table and Kafka read now."""
    day_cutoff = cutoff(day, lateness)
    consumed = consumed_offsets(settings, now)
    with health.kafka_partitions(bootstrap_servers, topics) as (consumer, partitions):
        ends = consumer.end_offsets(partitions)
        found = consumer.offsets_for_times({tp: int(day_cutoff.timestamp() * 1000) for tp in partitions})
    at_cutoff: dict[str, dict[str, int | None]] = {}
    for tp in partitions:
        hit = found.get(tp)
        at_cutoff.setdefault(tp.topic, {})[str(tp.partition)] = None if hit is None else hit.offset
    return assess(day, day_cutoff, consumed, at_cutoff, health.by_topic(ends), now)


# -- what a day's gold read ----------------------------------------------------------------------


def dependent_days(day: dt.date) -> list[dt.date]:
    """The silver days whose changes recompute the gold of `day`: the trailing window before it and
    the day itself. Not the day after, although its first seconds are read (ORDER_SPAN_DAYS): the
    stream writes it all day long after the gold of `day` ran, and the lines of an order of `day`
    on it were sent before the cutoff. Lifetime figures read all earlier days too; a change further
    back than the trailing window is not followed (that day's own gold is recomputed)."""
    first = day - dt.timedelta(days=rules.TRAILING_DAYS)
    return [first + dt.timedelta(days=n) for n in range(rules.TRAILING_DAYS + 1)]


def whole_table_version(table) -> dict:
    """A table not partitioned by day (made by other tools than the streaming job) has one version
    for every day: any change to it is a change to each."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {"records": 0, "snapshot_id": "", "rewrite": False}
    summary = snapshot.summary
    return {
        "records": live_records(snapshot),
        "snapshot_id": str(snapshot.snapshot_id),
        "rewrite": bool(summary) and summary.operation.value == "replace",
    }


def silver_versions(
    catalog: Catalog, days: Iterable[dt.date], tables: Iterable[str] = SILVER_DAILY
) -> dict[str, dict[str, dict]]:
    """table -> day -> {records (live), snapshot_id, rewrite} of the day partitions among `days` of
    `tables` (of SILVER_DAILY),
    from the tables' partition metadata alone (no data file is read). `rewrite` marks a partition
    last touched by a `replace` snapshot (compaction), which changes files but no rows."""
    wanted = {d.isoformat() for d in days}
    versions: dict[str, dict[str, dict]] = {}
    for name in tables:
        table = catalog.load_table(schema.TABLES[name].qualified)
        if not table.spec().fields:
            versions[name] = dict.fromkeys(sorted(wanted), whole_table_version(table))
            continue
        [field] = table.spec().fields  # the day of schema's partition_day_of: a date
        found: dict[str, dict] = {}
        for row in table.inspect.partitions().to_pylist():
            key = row["partition"][field.name].isoformat()
            if key in wanted:
                snapshot = table.snapshot_by_id(row["last_updated_snapshot_id"])
                operation = snapshot.summary.operation.value if snapshot and snapshot.summary else ""
                found[key] = {
                    # live rows: a session rebuilt by the stream (merge-on-read) adds a row and a
                    # position delete, which a compaction later folds into one row
                    "records": int(row["record_count"]) - int(row["position_delete_record_count"] or 0),
                    "snapshot_id": str(row["last_updated_snapshot_id"]),
                    "rewrite": operation == "replace",
                }
        versions[name] = found
    return versions


def stale_tables(
    recorded: Mapping[str, Mapping[str, Mapping]], current: Mapping[str, Mapping[str, Mapping]]
) -> list[str]:
    """`table day` of every silver day partition of the tables in `recorded` that changed since. A
    partition whose newest snapshot only rewrote files (compaction) with the same row count has not
    changed."""
    changed = []
    for table in sorted(recorded):
        before, now = recorded.get(table, {}), current.get(table, {})
        for day in sorted(set(before) | set(now)):
            old, new = before.get(day), now.get(day)
            if old is None or new is None:
                changed.append(f"{table} {day}")
            elif old["records"] != new["records"] or (old["snapshot_id"] != new["snapshot_id"] and not new["rewrite"]):
                changed.append(f"{table} {day}")
    return changed
