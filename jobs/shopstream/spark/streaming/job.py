"""The streaming job: Kafka -> bronze and silver Iceberg tables, exactly once.

One query reads every topic; each micro-batch, in order:
  products topic     -> silver_products (the newest record per product wins)
  raw-events         -> bronze_events (an append, skipped when a replay finds it committed)
  page-views, purchases, user-sessions
                     -> silver_page_views, silver_purchases (enriched from the catalog),
                        silver_user_sessions (rebuilt for the sessions the batch touched) and
                        quarantine_events (rejected records with a reason, late events)
Every silver write is an idempotent MERGE keyed by the event (or by the Kafka coordinates of a
rejected record), so a micro-batch replayed after a crash writes nothing twice. One query, one
writer thread: the embedded SQLite catalog never sees two writers. Each micro-batch's progress
goes to ops_streaming_progress.

    python -m shopstream streaming --help
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import threading
import time

from pyspark.errors import StreamingQueryException
from pyspark.sql import functions as F

from shopstream import catalog, lake, results, schema, settings
from shopstream.cli import add_result_file
from shopstream.lake import LakeSettings
from shopstream.spark import iceberg
from shopstream.spark.streaming import transforms as T

CATCH_UP = "catch-up"
SILVER_TOPICS = (schema.TOPIC_PAGE_VIEWS, schema.TOPIC_PURCHASES, schema.TOPIC_USER_SESSIONS)
# Sessions are rebuilt from silver rows within this far of the batch's events; no session lasts longer.
SESSION_SPAN_HOURS = 6


def parse_trigger(text: str) -> str | None:
    """`catch-up` (None: process what is there, then stop) or a processing-time interval."""
    if text == CATCH_UP:
        return None
    match = re.fullmatch(r"(\d+)\s*(seconds?|minutes?|s|m)", text.strip())
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"trigger {text!r}: use '{CATCH_UP}' or an interval such as '10 seconds'")
    return f"{match.group(1)} {'minutes' if match.group(2).startswith('m') else 'seconds'}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shopstream streaming",
        description=__doc__.split("\n\n")[0] + " Every setting also reads an environment variable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    settings.KAFKA_BOOTSTRAP.add_argument(parser, "--bootstrap-servers")
    settings.CHECKPOINT_DIR.add_argument(parser, "--checkpoint-dir")
    settings.TRIGGER.add_argument(parser, "--trigger", type=parse_trigger)
    settings.MAX_OFFSETS_PER_TRIGGER.add_argument(parser, "--max-offsets-per-trigger", type=int)
    settings.STARTING_OFFSETS.add_argument(parser, "--starting-offsets", choices=["earliest", "latest"])
    settings.ALLOWED_LATENESS.add_argument(parser, "--allowed-lateness", type=int)
    add_result_file(parser, "the micro-batches and input rows of this run, on exit,")
    LakeSettings.add_arguments(parser)
    return parser


# -- writers (the I/O side) -------------------------------------------------------------------


def _merge_insert_new(df, table: str, keys: tuple[str, ...], view: str) -> None:
    """Insert the rows whose key is not in the table yet: a replayed batch inserts nothing."""
    if df.isEmpty():
        return  # no commit, no snapshot: small continuous batches stay cheap
    df.createOrReplaceTempView(view)
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    df.sparkSession.sql(f"MERGE INTO {lake.table_ref(table)} t USING {view} s ON {on} WHEN NOT MATCHED THEN INSERT *")


def _merge_sessions(rows) -> None:
    """Upsert rebuilt sessions: counts come from the rebuild, start and end only ever widen."""
    rows.createOrReplaceTempView("session_updates")
    start, end = "least(t.session_start, s.session_start)", "greatest(t.session_end, s.session_end)"
    rows.sparkSession.sql(f"""
        MERGE INTO {lake.table_ref(schema.SILVER_USER_SESSIONS)} t USING session_updates s
        ON t.session_id = s.session_id
        WHEN MATCHED THEN UPDATE SET
          session_start = {start}, session_end = {end},
          duration_seconds = unix_seconds({end}) - unix_seconds({start}),
          device = coalesce(t.device, s.device), referrer = coalesce(t.referrer, s.referrer),
          country = coalesce(t.country, s.country),
          page_views = s.page_views, products_viewed = s.products_viewed, cart_adds = s.cart_adds,
          orders = s.orders, revenue = s.revenue, converted = s.converted, session_date = to_date({start})
        WHEN NOT MATCHED THEN INSERT *
    """)


def _append_once(df, table: str, batch_id: int) -> None:
    """Append, recording the batch id in the snapshot; a replayed batch finds it and skips."""
    marker = "shopstream.batch-id"
    done = (
        df.sparkSession.sql(
            f"SELECT max(CAST(summary['{marker}'] AS BIGINT)) AS last FROM {lake.table_ref(table)}.snapshots"
        )
        .first()
        .last
    )
    if done is not None and done >= batch_id:
        return
    df.writeTo(lake.table_ref(table)).option(f"snapshot-property.{marker}", str(batch_id)).append()


class StepTimer:
    """Seconds spent in each step of a micro-batch, printed as one line when it ends."""

    def __init__(self, label: str):
        self.label = label
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[step] = time.monotonic() - started

    def report(self) -> None:
        print(f"{self.label} steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()), flush=True)


class BatchWriter:
    """The foreachBatch body: one micro-batch of every topic into bronze and silver."""

    def __init__(self, allowed_lateness: int, recorder):
        self.allowed_lateness = allowed_lateness
        self.recorder = recorder
        self.session = None  # the query's own session: every catalog access goes through it

    def __call__(self, batch, batch_id: int) -> None:
        spark = batch.sparkSession
        if self.session is None:
            iceberg.ensure_tables(spark, catalog.STREAMING.writes)
            self.session = spark
        # Progress of earlier batches is written here, on the query's own thread (one writer).
        self.recorder.flush(spark)
        batch = batch.persist()
        steps = StepTimer(f"[{lake.STREAMING_QUERY}] batch {batch_id}")
        try:
            with steps("products"):
                self._products(batch.where(F.col("topic") == schema.TOPIC_PRODUCTS))
            with steps("bronze"):
                _append_once(
                    T.to_bronze(batch.where(F.col("topic") == schema.TOPIC_RAW_EVENTS)), schema.BRONZE_EVENTS, batch_id
                )
            self._silver(spark, batch.where(F.col("topic").isin(*SILVER_TOPICS)), steps)
        finally:
            batch.unpersist()
            steps.report()

    def _products(self, records) -> None:
        updates = T.latest_products(records)
        if updates.isEmpty():
            return
        updates.createOrReplaceTempView("product_updates")
        spark = records.sparkSession
        spark.sql(f"""
            MERGE INTO {lake.table_ref(schema.SILVER_PRODUCTS)} t USING product_updates s ON t.product_id = s.product_id
            WHEN MATCHED AND s.updated_at > t.updated_at THEN UPDATE SET *
            WHEN NOT MATCHED THEN INSERT *
        """)
        # Purchases that arrived before their product's catalog record get enriched now.
        spark.sql(f"""
            MERGE INTO {lake.table_ref(schema.SILVER_PURCHASES)} t USING product_updates s
            ON t.product_id = s.product_id AND t.category IS NULL
            WHEN MATCHED THEN UPDATE SET category = s.category, list_price = s.price
        """)

    def _silver(self, spark, typed_records, steps: StepTimer) -> None:
        records = T.parse_and_validate(typed_records).persist()
        try:
            valid = records.where(F.col("reason").isNull()).dropDuplicates(["event_id"]).persist()
            rejected = records.where(F.col("reason").isNotNull())
            event_key = ("event_id", "event_time")
            with steps("page views"):
                _merge_insert_new(T.to_page_views(valid), schema.SILVER_PAGE_VIEWS, event_key, "page_view_batch")
            with steps("purchases"):
                products = spark.table(lake.table_ref(schema.SILVER_PRODUCTS))
                _merge_insert_new(T.to_purchases(valid, products), schema.SILVER_PURCHASES, event_key, "purchase_batch")
            with steps("sessions"):
                self._rebuild_sessions(spark, valid.where(~T.is_late(self.allowed_lateness)))
            with steps("quarantine"):
                _merge_insert_new(
                    T.to_quarantine(rejected),
                    schema.QUARANTINE,
                    ("topic", "kafka_partition", "kafka_offset", "reason"),
                    "rejected_batch",
                )
                # A late event and its duplicates are one late record, whatever their offsets.
                _merge_insert_new(
                    T.to_quarantine(T.late_records(valid, self.allowed_lateness)),
                    schema.QUARANTINE,
                    ("event_id", "reason"),
                    "late_batch",
                )
            valid.unpersist()
        finally:
            records.unpersist()

    def _rebuild_sessions(self, spark, on_time) -> None:
        bounds = on_time.agg(F.min("event_time").alias("lo"), F.max("event_time").alias("hi")).first()
        if bounds.lo is None:
            return
        touched = on_time.select("session_id").distinct()
        span = F.expr(f"INTERVAL {SESSION_SPAN_HOURS} HOURS")

        def silver_rows(table: str):
            rows = spark.table(lake.table_ref(table))
            in_window = rows.where(F.col("event_time").between(F.lit(bounds.lo) - span, F.lit(bounds.hi) + span))
            return in_window.where(~T.is_late(self.allowed_lateness)).join(touched, "session_id", "left_semi")

        activity = T.session_activity(silver_rows(schema.SILVER_PAGE_VIEWS), silver_rows(schema.SILVER_PURCHASES))
        _merge_sessions(T.session_rows(activity.join(touched, "session_id", "right"), T.session_events(on_time)))


# -- progress ---------------------------------------------------------------------------------


def progress_row(progress) -> dict:
    """One ops_streaming_progress row from a StreamingQueryProgress."""
    import datetime as dt

    offsets = {}
    for source in progress.sources:
        if source.endOffset:
            offsets.update(json.loads(source.endOffset) if isinstance(source.endOffset, str) else source.endOffset)
    watermark = (progress.eventTime or {}).get("watermark")

    def parse(text: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    return {
        "query_name": progress.name or str(progress.id),
        "run_id": str(progress.runId),
        "batch_id": int(progress.batchId),
        "progress_time": parse(progress.timestamp),
        "num_input_rows": int(progress.numInputRows),
        "input_rows_per_second": float(progress.inputRowsPerSecond or 0.0),
        "processed_rows_per_second": float(progress.processedRowsPerSecond or 0.0),
        "batch_duration_ms": int((progress.durationMs or {}).get("triggerExecution", 0)),
        "watermark": parse(watermark) if watermark and not watermark.startswith("1970-01-01") else None,
        "end_offsets": json.dumps(offsets, sort_keys=True),
    }


def progress_listener_class():
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressRecorder(StreamingQueryListener):
        """Collects micro-batch progress on Spark's listener thread; the main thread writes it,
        because running Spark jobs from a listener callback can deadlock the listener bus."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.pending: list[dict] = []
            self.seen = 0

        def onQueryStarted(self, event) -> None:
            pass

        def onQueryProgress(self, event) -> None:
            row = progress_row(event.progress)
            with self.lock:
                self.pending.append(row)
                self.seen += 1
            print(
                f"[{row['query_name']}] batch {row['batch_id']}: {row['num_input_rows']} rows in "
                f"{row['batch_duration_ms']} ms ({row['processed_rows_per_second']:.0f} rows/s)",
                flush=True,
            )

        def onQueryIdle(self, event) -> None:
            pass

        def onQueryTerminated(self, event) -> None:
            pass

        def wait_for(self, count: int, timeout: float = 10.0) -> None:
            """Listener events arrive asynchronously: wait until `count` progress reports came."""
            deadline = time.monotonic() + timeout
            while self.seen < count and time.monotonic() < deadline:
                time.sleep(0.1)

        def flush(self, spark) -> int:
            with self.lock:
                rows, self.pending = self.pending, []
            if rows:
                df = spark.createDataFrame(rows, schema.spark_schema(schema.PROGRESS.columns))
                df.writeTo(lake.table_ref(schema.STREAMING_PROGRESS)).append()
            return len(rows)

    return ProgressRecorder()


# -- the application --------------------------------------------------------------------------


class StreamingApp:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.settings = LakeSettings.from_args(args)
        self.checkpoint = lake.streaming_checkpoint(args.checkpoint_dir)
        self.stopping = threading.Event()

    def start(self, spark, writer: BatchWriter):
        stream = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", self.args.bootstrap_servers)
            .option("subscribe", ",".join(schema.ALL_TOPICS))
            .option("startingOffsets", self.args.starting_offsets)
            .option("maxOffsetsPerTrigger", str(self.args.max_offsets_per_trigger))
            .load()
        )
        query = (
            stream.writeStream.queryName(lake.STREAMING_QUERY)
            .option("checkpointLocation", self.checkpoint)
            .foreachBatch(writer)
        )
        if self.args.trigger is None:
            query = query.trigger(availableNow=True)
        else:
            query = query.trigger(processingTime=self.args.trigger)
        return query.start()

    def run(self) -> int:
        spark = iceberg.spark_session(self.settings, "shopstream-streaming")
        recorder = progress_listener_class()
        spark.streams.addListener(recorder)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        writer = BatchWriter(self.args.allowed_lateness, recorder)
        started = time.monotonic()
        query = self.start(spark, writer)
        try:
            while query.isActive and not self.stopping.is_set():
                try:
                    query.awaitTermination(2)
                except StreamingQueryException:
                    break  # reported below from query.exception()
            query.stop()
            error = query.exception()
            recorder.wait_for(len(query.recentProgress))
            if writer.session is not None:
                recorder.flush(writer.session)
            if error is not None:
                # Exit non-zero: a failed stream must never look like a completed application.
                print(f"error: streaming query failed: {str(error).splitlines()[0]}", file=sys.stderr)
                return 1
            progress = [p for p in query.recentProgress if p.numInputRows]
            results.write_result(
                self.args.result_file,
                self.settings,
                job="streaming",
                rows_written={},
                totals={"micro_batches": len(progress), "input_rows": sum(p.numInputRows for p in progress)},
                duration_seconds=round(time.monotonic() - started, 3),
            )
            return 0
        finally:
            spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_offsets_per_trigger < 1 or args.allowed_lateness < 0:
        print("error: --max-offsets-per-trigger must be positive and --allowed-lateness not negative", file=sys.stderr)
        return 2
    return StreamingApp(args).run()
