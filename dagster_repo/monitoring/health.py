"""How healthy the streaming job is: age of its last progress record, consumer lag (Kafka's end
offsets against the offsets in the query's checkpoint), and, in kubernetes mode, the state of the
streaming SparkApplication. Read by the `streaming_health_monitor` asset and its sensor; its
progress and Kafka readers serve the completeness gate too (completeness.py).

Spark's checkpoint keeps one file per planned micro-batch in `offsets/` (a version line, a
metadata line, then one JSON line per source: topic -> partition -> next offset) and one per
finished micro-batch in `commits/`; the lag counts from the newest committed batch.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from pyarrow import fs as pafs

from shopstream import lake, schema, settings
from shopstream.lake import LakeSettings


@dataclass(frozen=True)
class Thresholds:
    max_progress_age_seconds: int = settings.HEALTH_MAX_PROGRESS_AGE.read_int({})
    max_lag: int = settings.HEALTH_MAX_LAG.read_int({})


@dataclass
class StreamingHealth:
    measured_at: dt.datetime
    last_progress_time: dt.datetime | None = None
    last_batch_id: int | None = None
    input_rows_per_second: float | None = None
    committed_batch: int | None = None
    lag_by_topic: dict[str, int] | None = None  # None: unknown
    application_state: str | None = None
    errors: list[str] = field(default_factory=list)  # what could not be measured, and why

    @property
    def progress_age_seconds(self) -> float | None:
        if self.last_progress_time is None:
            return None
        return (self.measured_at - self.last_progress_time).total_seconds()

    @property
    def total_lag(self) -> int | None:
        return None if self.lag_by_topic is None else sum(self.lag_by_topic.values())

    def progress_problem(self, thresholds: Thresholds) -> str | None:
        age = self.progress_age_seconds
        if age is None:
            return "the streaming job has recorded no progress yet"
        if age > thresholds.max_progress_age_seconds:
            limit = thresholds.max_progress_age_seconds
            return (
                f"the streaming job's last progress is {age:,.0f}s old (limit {limit:,}s; "
                f"last batch {self.last_batch_id} at {self.last_progress_time:%Y-%m-%d %H:%M:%S} UTC)"
            )
        return None

    def lag_problem(self, thresholds: Thresholds) -> str | None:
        if self.total_lag is None:
            return "consumer lag is unknown: " + ("; ".join(self.errors) or "no checkpoint yet")
        if self.lag_by_topic and self.total_lag > thresholds.max_lag:
            worst = max(self.lag_by_topic.items(), key=lambda item: item[1])
            return (
                f"consumer lag is {self.total_lag:,} records (limit {thresholds.max_lag:,}; {worst[0]}: {worst[1]:,})"
            )
        return None

    def application_problem(self) -> str | None:
        if self.application_state in ("FAILED", "SUBMISSION_FAILED", "COMPLETED", "MISSING"):
            return f"the streaming SparkApplication is {self.application_state}"
        return None

    def problems(self, thresholds: Thresholds) -> dict[str, str]:
        """What is wrong, by kind (progress, lag, application); empty when healthy."""
        found = {
            "progress": self.progress_problem(thresholds),
            "lag": self.lag_problem(thresholds),
            "application": self.application_problem(),
        }
        return {kind: message for kind, message in found.items() if message}

    def metadata(self) -> dict:
        return {
            "measured_at": self.measured_at.isoformat(),
            "last_progress_time": self.last_progress_time.isoformat() if self.last_progress_time else None,
            "progress_age_seconds": round(self.progress_age_seconds, 1)
            if self.progress_age_seconds is not None
            else None,
            "last_batch_id": self.last_batch_id,
            "input_rows_per_second": self.input_rows_per_second,
            "committed_batch": self.committed_batch,
            "lag_by_topic": self.lag_by_topic,
            "total_lag": self.total_lag,
            "application_state": self.application_state,
            "measurement_errors": self.errors,
        }


def _filesystem(uri: str, settings: LakeSettings) -> tuple[pafs.FileSystem, str]:
    if uri.startswith(("s3://", "s3a://")):
        bucket_path = uri.split("://", 1)[1]
        scheme, _, host = (settings.s3_endpoint or "").partition("://")
        s3 = pafs.S3FileSystem(
            region=settings.s3_region,
            endpoint_override=host or None,
            scheme=scheme or "https",
            force_virtual_addressing=False,
        )
        return s3, bucket_path
    return pafs.LocalFileSystem(), uri.removeprefix("file://")


def checkpoint_offsets(root: str, settings: LakeSettings) -> tuple[int | None, dict[str, dict[str, int]]]:
    """The newest committed batch and its offsets (topic -> partition -> offset)."""
    filesystem, path = _filesystem(root, settings)

    def batches(folder: str) -> list[int]:
        try:
            infos = filesystem.get_file_info(pafs.FileSelector(f"{path}/{folder}", allow_not_found=True))
        except OSError:
            return []
        return sorted(int(i.base_name) for i in infos if i.base_name.isdigit())

    committed = batches("commits")
    if not committed:
        return None, {}
    batch = committed[-1]
    with filesystem.open_input_stream(f"{path}/offsets/{batch}") as stream:
        lines = stream.read().decode().splitlines()
    offsets: dict[str, dict[str, int]] = {}
    for line in lines[2:]:  # after the version and metadata lines: one line per source
        if line.strip().startswith("{"):
            for topic, partitions in json.loads(line).items():
                offsets[topic] = {str(p): int(o) for p, o in partitions.items()}
    return batch, offsets


@contextmanager
def kafka_partitions(bootstrap_servers: str, topics) -> Iterator[tuple[KafkaConsumer, list[TopicPartition]]]:
    """A consumer (no group, nothing consumed) and every partition of `topics`, for offset look-ups."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,  # no group to commit for (and no warning saying so)
        request_timeout_ms=15000,
        api_version_auto_timeout_ms=10000,
    )
    try:
        yield consumer, [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
    finally:
        consumer.close()


def by_topic(offsets: Mapping[TopicPartition, int]) -> dict[str, dict[str, int]]:
    """Offsets keyed as the checkpoint and the progress table key them: topic -> partition -> offset."""
    out: dict[str, dict[str, int]] = {}
    for tp, offset in offsets.items():
        out.setdefault(tp.topic, {})[str(tp.partition)] = offset
    return out


def end_offsets(bootstrap_servers: str, topics) -> dict[str, dict[str, int]]:
    with kafka_partitions(bootstrap_servers, topics) as (consumer, partitions):
        return by_topic(consumer.end_offsets(partitions))


def newest_progress(settings: LakeSettings, now: dt.datetime, columns: tuple[str, ...]) -> dict | None:
    """`columns` of the newest ops_streaming_progress row (its progress_time in UTC), or None."""
    catalog = lake.iceberg_catalog(settings)
    table = catalog.load_table(schema.TABLES[schema.STREAMING_PROGRESS].qualified)
    selected = tuple(dict.fromkeys(("progress_time", *columns)))
    recent = f"progress_time >= '{(now - dt.timedelta(days=1)).isoformat()}'"
    rows = table.scan(row_filter=recent, selected_fields=selected).to_arrow()
    if rows.num_rows == 0:
        rows = table.scan(selected_fields=selected).to_arrow()
    if rows.num_rows == 0:
        return None
    newest = max(rows.to_pylist(), key=lambda r: r["progress_time"])
    return {**newest, "progress_time": newest["progress_time"].replace(tzinfo=dt.UTC)}


def latest_progress(settings: LakeSettings, now: dt.datetime):
    """(progress_time, batch_id, input rows/s) of the newest progress record, or None."""
    newest = newest_progress(settings, now, ("batch_id", "input_rows_per_second"))
    if newest is None:
        return None
    return newest["progress_time"], newest["batch_id"], newest["input_rows_per_second"]


def measure(
    settings: LakeSettings,
    bootstrap_servers: str,
    checkpoint: str,
    application_state=None,
    now: dt.datetime | None = None,
) -> StreamingHealth:
    """Measure everything it can; what cannot be measured is recorded in `errors`, never raised."""
    health = StreamingHealth(measured_at=now or dt.datetime.now(dt.UTC))
    try:
        newest = latest_progress(settings, health.measured_at)
        if newest:
            health.last_progress_time, health.last_batch_id, health.input_rows_per_second = newest
    except Exception as exc:  # noqa: BLE001 - reported as a measurement error
        health.errors.append(f"progress table: {exc}")
    try:
        health.committed_batch, committed = checkpoint_offsets(checkpoint, settings)
        if health.committed_batch is None:
            health.errors.append(f"no committed batch in the checkpoint {checkpoint}")
        else:
            ends = end_offsets(bootstrap_servers, committed.keys())
            health.lag_by_topic = {
                topic: sum(max(0, end - committed.get(topic, {}).get(p, 0)) for p, end in parts.items())
                for topic, parts in ends.items()
            }
    except Exception as exc:  # noqa: BLE001
        health.errors.append(f"consumer lag: {exc}")
    if application_state is not None:
        try:
            health.application_state = application_state()
        except Exception as exc:  # noqa: BLE001
            health.errors.append(f"streaming SparkApplication: {exc}")
    return health
