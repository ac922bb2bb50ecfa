"""Compaction benchmark: small files and metadata after a long simulated stream, without and with
maintenance running periodically.

    .venv/bin/python bench/compaction_bench.py [--batches 200] [--days 2] [--maintenance-every 50]

A simulated stream commits micro-batches shaped like the streaming job's. Each batch appends a few
hundred page views to silver_page_views (the job's insert-only MERGE commits as an append; the
bench appends directly, which is the same commit and cheaper to plan) and upserts the sessions they
touch into silver_user_sessions through the job's own merge-on-read MERGE, so a session's update
writes a delete file. The simulated clock runs over several days: sessions that started before
midnight go on after it, and a few page views arrive late, into the day before.

The same stream writes two fresh lakes, batch by batch in turn (each lake in its own session of
one local Spark, so the machine's load falls on both alike): one without maintenance, one with
`shopstream.spark.maintenance` every N batches, treating the days before the simulated
now minus the allowed lateness as closed (the job's own rule) and expiring the snapshots older than
the pass but the newest 10 (the simulated days pass in minutes; in production snapshots are kept a
week). Reported per table: data files and files per partition, delete files, snapshots, metadata
files and their bytes on disk, and the seconds the writes took. Results are printed and written to
bench/results/compaction.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from shopstream import lake, schema, settings
from shopstream.spark import iceberg, maintenance
from shopstream.spark.streaming import job

RESULTS = Path(__file__).resolve().parent / "results"
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
TABLES = (schema.SILVER_PAGE_VIEWS, schema.SILVER_USER_SESSIONS)
SESSION_BATCHES = 5  # a session goes on for this many micro-batches
RETAIN_LAST = 10
WARM_UP_BATCHES = 10


@dataclass
class Session:
    session_id: str
    user_id: str
    start: dt.datetime
    end: dt.datetime
    device: str
    page_views: int = 0


@dataclass
class SimulatedStream:
    """Deterministic micro-batches: page views of the sessions going on at each batch's time."""

    batches: int
    days: int
    rows_per_batch: int
    new_sessions_per_batch: int
    late_fraction: float = 0.01
    seed: int = 5
    going_on: list[Session] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.step = dt.timedelta(seconds=self.days * 86_400 / self.batches)

    def now(self, batch: int) -> dt.datetime:
        return START + batch * self.step

    def batch(self, batch: int) -> tuple[list[tuple], list[Session]]:
        """The page-view rows of `batch` and the sessions they touched (their counts updated)."""
        now = self.now(batch)
        self.going_on = [s for s in self.going_on if now - s.start < SESSION_BATCHES * self.step]
        for n in range(self.new_sessions_per_batch):
            user = f"u{self.random.randrange(5_000)}"
            self.going_on.append(Session(f"s{batch}-{n}", user, now, now, self.random.choice(["mobile", "desktop"])))
        views, touched = [], {}
        for n in range(self.rows_per_batch):
            session = self.random.choice(self.going_on)
            late = self.random.random() < self.late_fraction
            when = now - dt.timedelta(minutes=40 if late else self.random.uniform(0, 1))
            session.page_views += 1
            session.end = max(session.end, when)
            touched[session.session_id] = session
            views.append(
                (
                    f"pv{batch}-{n}",
                    "page_view",
                    when,
                    now,
                    session.user_id,
                    session.session_id,
                    "home",
                    "/",
                    None,
                    None,
                    None,
                    None,
                    when.date(),
                )
            )
        return views, list(touched.values())


def session_rows(sessions: list[Session]) -> list[tuple]:
    return [
        (
            s.session_id,
            s.user_id,
            s.start,
            s.end,
            int((s.end - s.start).total_seconds()),
            s.device,
            "direct",
            "DE",
            s.page_views,
            0,
            0,
            0,
            Decimal("0.00"),
            False,
            s.start.date(),
        )
        for s in sessions
    ]


def write_batch(spark, views: list[tuple], sessions: list[Session]) -> None:
    spark.createDataFrame(views, schema.spark_schema(schema.PAGE_VIEWS.columns)).writeTo(
        lake.table_ref(schema.SILVER_PAGE_VIEWS)
    ).append()
    rows = spark.createDataFrame(session_rows(sessions), schema.spark_schema(schema.USER_SESSIONS.columns))
    first, last = min(s.start for s in sessions), max(s.end for s in sessions)
    job._merge_sessions(
        rows,
        f"BETWEEN TIMESTAMP '{first:%Y-%m-%d %H:%M:%S}' - INTERVAL {job.SESSION_SPAN_HOURS} HOURS "
        f"AND TIMESTAMP '{last:%Y-%m-%d %H:%M:%S}' + INTERVAL {job.SESSION_SPAN_HOURS} HOURS",
    )


def metadata_on_disk(spark, name: str) -> dict:
    """The files of the table's metadata folder (table metadata versions, manifest lists, manifests)."""
    (current,) = spark.sql(
        f"SELECT file FROM {lake.table_ref(name)}.metadata_log_entries ORDER BY timestamp DESC LIMIT 1"
    ).first()
    current_file = Path(current.removeprefix("file:"))
    files = [p for p in current_file.parent.iterdir() if p.is_file()]
    return {
        "metadata_files": len(files),
        "metadata_bytes": sum(p.stat().st_size for p in files),
        "current_metadata_json_bytes": current_file.stat().st_size,
    }


def table_figures(spark, name: str) -> dict:
    ref = lake.table_ref(name)
    # A day partition's one field holds its day: {"event_time_day":"2026-11-01"}.
    files = spark.sql(f"SELECT content, to_json(partition) AS partition FROM {ref}.files").collect()
    days = {row.partition: next(iter(json.loads(row.partition).values())) for row in files}
    data = Counter(days[row.partition] for row in files if row.content == 0)
    deletes = Counter(days[row.partition] for row in files if row.content != 0)
    counts = list(data.values()) or [0]
    return {
        "rows": spark.table(ref).count(),
        "partitions": len(data),
        "data_files": sum(counts),
        "max_files_per_partition": max(counts),
        "mean_files_per_partition": round(statistics.mean(counts), 1),
        "delete_files": sum(deletes.values()),
        "snapshots": spark.sql(f"SELECT count(*) FROM {ref}.snapshots").first()[0],
        **metadata_on_disk(spark, name),
        "data_files_per_day": dict(sorted(data.items())),
        "delete_files_per_day": dict(sorted(deletes.items())),
    }


def lake_session(base, root: Path):
    """A session of its own on the lake under `root`. Catalog settings are per session, so one JVM
    writes both lakes batch by batch, and the machine's load falls on both runs alike."""
    settings = lake.LakeSettings.local(root)
    settings.create_local_folders()
    session = base.newSession()
    for key, value in settings.spark_conf().items():
        if key.startswith(f"spark.sql.catalog.{lake.CATALOG}."):
            session.conf.set(key, value)
    iceberg.ensure_tables(session, TABLES)
    return session


@dataclass
class Run:
    """The simulated stream into one lake, with maintenance every `maintenance_every` batches or never."""

    spark: Any
    stream: SimulatedStream
    maintenance_every: int | None
    allowed_lateness: int
    batch_seconds: list[float] = field(default_factory=list)
    maintenance_seconds: list[float] = field(default_factory=list)

    def write(self, batch: int) -> None:
        views, sessions = self.stream.batch(batch)
        started = time.monotonic()
        write_batch(self.spark, views, sessions)
        self.batch_seconds.append(time.monotonic() - started)
        if self.maintenance_every and (batch + 1) % self.maintenance_every == 0:
            started = time.monotonic()
            now = dt.datetime.now(dt.UTC)
            maintenance.maintain(
                self.spark,
                list(TABLES),
                closed=maintenance.closed_before(self.stream.now(batch), self.allowed_lateness),
                expire_before=now,
                retain_last=RETAIN_LAST,
                orphans_before=now - dt.timedelta(days=1),
            )
            self.maintenance_seconds.append(time.monotonic() - started)

    def figures(self) -> dict:
        tenth = max(1, len(self.batch_seconds) // 10)
        return {
            "write_seconds": round(sum(self.batch_seconds), 1),
            "seconds_per_batch_first_10pct": round(statistics.mean(self.batch_seconds[:tenth]), 3),
            "seconds_per_batch_last_10pct": round(statistics.mean(self.batch_seconds[-tenth:]), 3),
            "maintenance_passes": len(self.maintenance_seconds),
            "maintenance_seconds": round(sum(self.maintenance_seconds), 1),
            "tables": {name: table_figures(self.spark, name) for name in TABLES},
        }


def simulate(base, root: Path, args: argparse.Namespace, batches: int) -> dict:
    """Both runs, batch by batch: each batch into the lake without maintenance, then into the one with."""
    runs = {
        key: Run(
            lake_session(base, root / key),
            SimulatedStream(batches, args.days, args.rows_per_batch, args.new_sessions_per_batch),
            every,
            args.allowed_lateness,
        )
        for key, every in (("without_maintenance", None), ("with_maintenance", args.maintenance_every))
    }
    for batch in range(batches):
        for each in runs.values():
            each.write(batch)
        if (batch + 1) % 100 == 0:
            seconds = ", ".join(f"{key} {sum(each.batch_seconds):.0f}s" for key, each in runs.items())
            print(f"{batch + 1} batches; writes: {seconds}", flush=True)
    return {key: each.figures() for key, each in runs.items()}


def render(result: dict) -> str:
    without, with_ = result["runs"]["without_maintenance"], result["runs"]["with_maintenance"]
    lines = [f"{'':46}{'without':>12}{'with':>12}"]
    for key in (
        "write_seconds",
        "seconds_per_batch_first_10pct",
        "seconds_per_batch_last_10pct",
        "maintenance_seconds",
    ):
        lines.append(f"{key:46}{without[key]:>12}{with_[key]:>12}")
    for name in TABLES:
        for key, value in without["tables"][name].items():
            if isinstance(value, dict):  # per day: a line of its own
                lines.append(f"{name} {key}: without {value}, with {with_['tables'][name][key]}")
            else:
                lines.append(f"{name + ' ' + key:46}{value:>12}{with_['tables'][name][key]:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="micro-batches of each run (default 200)")
    parser.add_argument("--days", type=int, default=2, help="simulated days the batches span (default 2)")
    parser.add_argument("--rows-per-batch", type=int, default=300, help="page views per batch (default 300)")
    parser.add_argument("--new-sessions-per-batch", type=int, default=20, help="sessions starting per batch")
    parser.add_argument(
        "--maintenance-every", type=int, default=50, help="batches between maintenance passes (default 50)"
    )
    settings.ALLOWED_LATENESS.add_argument(parser, "--allowed-lateness", type=int)
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    result: dict = {"machine_cores": os.cpu_count(), **vars(args)}
    with tempfile.TemporaryDirectory(prefix="shopstream-compaction-") as tmp:
        os.environ["SHOPSTREAM_HOME"] = tmp
        base = iceberg.spark_session(lake.LakeSettings.local(Path(tmp) / "base"), "shopstream-compaction-bench")
        try:
            # Unreported: a JVM's first batches are slow.
            simulate(base, Path(tmp) / "warm-up", args, WARM_UP_BATCHES)
            result["runs"] = simulate(base, Path(tmp), args, args.batches)
        finally:
            base.stop()
    rows = {key: {n: t["rows"] for n, t in r["tables"].items()} for key, r in result["runs"].items()}
    if len({json.dumps(r, sort_keys=True) for r in rows.values()}) != 1:
        raise SystemExit(f"error: the two runs hold different rows: {rows}")
    (RESULTS / "compaction.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
