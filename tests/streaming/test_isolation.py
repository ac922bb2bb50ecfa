"""A micro-batch that fails on its data: the records at fault are found by writing the batch in
halves and quarantined; any other failure still stops the stream. In process, against the test lake."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from shopstream import catalog, lake, schema
from shopstream.spark import iceberg
from shopstream.spark.streaming import job
from shopstream.spark.streaming import transforms as T
from tests.streaming.test_transforms import RAW, event, kafka_batch

pytestmark = pytest.mark.spark


class NoProgress:
    def flush(self, spark) -> int:
        return 0


def page_views(count: int, poison: int) -> list:
    return [
        (RAW, event("page_view", n, page_type="home", page_url="/", event_id="poison" if n == poison else f"v{n}"))
        for n in range(count)
    ]


def test_only_the_record_at_fault_is_quarantined_and_a_replay_adds_nothing(empty_lake, monkeypatch):
    spark = empty_lake
    real = T.to_page_views

    def failing_on_poison(valid):
        # A data error validation did not foresee, on one row only: the cast of the issue (SQLSTATE 22003).
        overflow = (F.length("event_id") * F.lit(10**11)).cast(schema.spark_type(schema.MONEY))
        return real(valid).withColumn(
            "unit_price", F.when(F.col("event_id") == "poison", overflow).otherwise(F.col("unit_price"))
        )

    monkeypatch.setattr(T, "to_page_views", failing_on_poison)
    batch = kafka_batch(spark, page_views(4, poison=2))
    writer = job.BatchWriter(1800, T.TimeWindow(), NoProgress())
    for batch_id in (0, 1):  # the second time, a replay of the same offsets
        writer(batch, batch_id)
        silver = spark.table(lake.table_ref(schema.SILVER_PAGE_VIEWS)).collect()
        assert sorted(r.event_id for r in silver) == ["v0", "v1", "v3"]
        (quarantined,) = spark.table(lake.table_ref(schema.QUARANTINE)).collect()
        assert (quarantined.reason, quarantined.topic, quarantined.kafka_offset, quarantined.event_id) == (
            schema.REASON_WRITE_FAILED,
            RAW,
            2,
            "poison",
        )
        assert quarantined.detail.startswith("[NUMERIC_VALUE_OUT_OF_RANGE")
        assert len(spark.table(lake.table_ref(schema.SILVER_USER_SESSIONS)).collect()) == 1


def test_a_failure_not_about_data_stops_the_batch_with_its_cause(empty_lake):
    spark = empty_lake
    writer = job.BatchWriter(1800, T.TimeWindow(), NoProgress())
    writer(kafka_batch(spark, page_views(1, poison=-1)), 0)  # creates the tables
    spark.sql(f"DROP TABLE {lake.table_ref(schema.SILVER_PURCHASES)}")
    with pytest.raises(Exception) as stopped:
        writer(kafka_batch(spark, page_views(2, poison=-1)), 1)
    assert not job.is_data_error(stopped.value)
    assert writer.failure.startswith("batch 1, step sessions: ") and "\n" not in writer.failure


def test_progress_whose_write_failed_is_written_by_the_next_flush(empty_lake):
    spark = empty_lake
    recorder = job.progress_listener_class()
    finished = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    rows = []
    for batch_id in (7, 8):
        rows.append(
            {
                "query_name": lake.STREAMING_QUERY,
                "run_id": "run-1",
                "batch_id": batch_id,
                "progress_time": finished + dt.timedelta(seconds=batch_id),
                "num_input_rows": 100 * batch_id,
                "input_rows_per_second": 1.0,
                "processed_rows_per_second": 2.0,
                "batch_duration_ms": 500,
                "watermark": None,
                "end_offsets": '{"raw-events": {"0": 10}}',
            }
        )
    rows[1] |= {"watermark": finished, "end_offsets": '{"raw-events": {"0": 10, "1": 3}, "products": {"0": 2}}'}
    recorder.pending.extend(dict(row) for row in rows)
    with pytest.raises(Exception, match=schema.STREAMING_PROGRESS):  # no table to write to yet
        recorder.flush(spark)
    assert [row["batch_id"] for row in recorder.pending] == [7, 8]
    iceberg.ensure_tables(spark, catalog.STREAMING.writes)
    assert recorder.flush(spark) == 2
    assert recorder.pending == []
    # Every value as it was reported, the times as instants.
    epoch = {"progress_time": F.unix_micros("progress_time"), "watermark": F.unix_micros("watermark")}
    written = spark.table(lake.table_ref(schema.STREAMING_PROGRESS)).withColumns(epoch).orderBy("batch_id")

    def micros(time: dt.datetime | None) -> int | None:
        return None if time is None else int(time.timestamp() * 1_000_000)

    assert [row.asDict() for row in written.collect()] == [
        row | {"progress_time": micros(row["progress_time"]), "watermark": micros(row["watermark"])} for row in rows
    ]
