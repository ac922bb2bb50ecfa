"""Streaming benchmark: catch-up throughput against Kafka's own raw consumer, freshness in
continuous mode, and files per partition.

    .venv/bin/python bench/streaming_bench.py [--events 1000000] [--freshness-seconds 180]

Everything runs on this machine in one go: a fresh broker, the generator, the streaming job as its
own process, and Kafka's consumer performance tool on the same topic as the baseline. Results are
printed and written to bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from shopstream import lake, schema, settings
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator.cli import send
from shopstream.events.generator.shop import GeneratorConfig, Shop
from shopstream.runtime import KAFKA_BROKER, jar_dir, java_executable

RESULTS = Path(__file__).resolve().parent / "results"


def raw_consume_rate(bootstrap: str, topic: str, messages: int) -> dict:
    """Kafka's consumer performance tool reading `messages` records of `topic` from the start."""
    out = subprocess.run(
        [
            java_executable(),
            "-Xmx1g",
            "-cp",
            str(jar_dir(KAFKA_BROKER) / "*"),
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(messages),
            "--timeout",
            "120000",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(header, values, strict=True))
    return {
        "messages": int(row["data.consumed.in.nMsg"]),
        "messages_per_s": float(row["nMsg.sec"]),
        "mb_per_s": float(row["MB.sec"]),
        "fetch_messages_per_s": float(row["fetch.nMsg.sec"]),
    }


def streaming_command(root: Path, bootstrap: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "shopstream",
        "streaming",
        "--bootstrap-servers",
        bootstrap,
        "--catalog-uri",
        f"jdbc:sqlite:{root / 'catalog.db'}",
        "--warehouse",
        f"file://{root / 'warehouse'}",
        "--checkpoint-dir",
        str(root / "checkpoints"),
        *extra,
    ]


def catalog_for(root: Path):
    return lake.iceberg_catalog(lake.LakeSettings(f"jdbc:sqlite:{root / 'catalog.db'}", f"file://{root / 'warehouse'}"))


def files_per_partition(root: Path) -> dict:
    catalog = catalog_for(root)
    out = {}
    for name in (
        schema.BRONZE_EVENTS,
        schema.SILVER_PAGE_VIEWS,
        schema.SILVER_PURCHASES,
        schema.SILVER_USER_SESSIONS,
        schema.QUARANTINE,
    ):
        files = catalog.load_table(schema.TABLES[name].qualified).inspect.files().to_pylist()
        per_partition = Counter(json.dumps(f["partition"], default=str, sort_keys=True) for f in files)
        counts = list(per_partition.values()) or [0]
        out[name] = {
            "partitions": len(per_partition),
            "files": len(files),
            "max_files_per_partition": max(counts),
            "mean_files_per_partition": round(statistics.mean(counts), 1),
        }
    return out


STEP_LINE = re.compile(r"\] batch (\d+)( rows \d+-\d+)? steps: (.*)$")


def batch_steps(job_output: str) -> dict[int, dict[str, float]]:
    """Each micro-batch's seconds per step, by batch id, from the job's step lines
    ("[query] batch 3 steps: products 0.1s, bronze 2.0s, ..."); a batch written again in halves
    ("batch 3 rows 1-500 steps: ...") counts every attempt."""
    batches: defaultdict[int, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in job_output.splitlines():
        match = STEP_LINE.search(line)
        if match:
            for part in match.group(3).split(", "):
                step, seconds = part.rsplit(" ", 1)
                batches[int(match.group(1))][step] += float(seconds.rstrip("s"))
    return {batch: {step: round(seconds, 2) for step, seconds in steps.items()} for batch, steps in batches.items()}


def step_seconds(job_output: str) -> dict[str, float]:
    """Seconds per step summed over every micro-batch."""
    total: defaultdict[str, float] = defaultdict(float)
    for steps in batch_steps(job_output).values():
        for step, seconds in steps.items():
            total[step] += seconds
    return {step: round(seconds, 1) for step, seconds in total.items()}


def throughput(workdir: Path, events: int, max_offsets: int) -> dict:
    broker = KafkaBroker(workdir / "kafka", port=free_port()).start()
    try:
        create_topics(broker.bootstrap_servers)
        config = GeneratorConfig(
            seed=1, events_per_day=events, late_fraction=0.01, duplicate_fraction=0.01, malformed_fraction=0.005
        )
        shop = Shop(config)
        print(f"producing about {events:,} events ...", flush=True)
        started = time.monotonic()
        summary = send(
            itertools.chain(shop.catalog(), shop.records()),
            broker.bootstrap_servers,
            progress_total=events,
            show_progress=sys.stderr.isatty(),
        )
        produce_seconds = time.monotonic() - started
        print(summary.render(produce_seconds), flush=True)

        print("raw consumer baseline on raw-events ...", flush=True)
        raw = raw_consume_rate(broker.bootstrap_servers, schema.TOPIC_RAW_EVENTS, summary.events)

        root = workdir / "lake-throughput"
        (root / "warehouse").mkdir(parents=True)
        print("streaming catch-up ...", flush=True)
        started = time.monotonic()
        job = subprocess.run(
            streaming_command(root, broker.bootstrap_servers, "--max-offsets-per-trigger", str(max_offsets)),
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        progress = catalog_for(root).load_table(schema.PROGRESS.qualified).scan().to_arrow().to_pylist()
        batch_seconds = sum(p["batch_duration_ms"] for p in progress) / 1000
        pipeline_rate = summary.events / seconds
        return {
            "events": summary.events,
            "kafka_messages": summary.messages,
            "produce_events_per_s": round(summary.events / produce_seconds),
            "raw_consumer": raw,
            "catch_up_seconds": round(seconds, 1),
            "micro_batches": len(progress),
            "seconds_in_micro_batches": round(batch_seconds, 1),
            "pipeline_events_per_s": round(pipeline_rate),
            "pipeline_events_per_s_in_batches": round(summary.events / batch_seconds) if batch_seconds else None,
            "ratio_to_raw_consumer": round(pipeline_rate / raw["messages_per_s"], 4),
            "steps": step_seconds(job.stdout),
            "files": files_per_partition(root),
        }
    finally:
        broker.stop()


KAFKA_ROW = "key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, timestamp TIMESTAMP"
GROWTH_START = dt.date(2026, 10, 1)  # the filled days end before today: no event time is implausible


class NoProgress:
    """The batch writer's progress recorder, with no streaming query to report on."""

    def flush(self, spark) -> int:
        return 0


def growth(workdir: Path, batch_events: int, multiples: list[int]) -> list[dict]:
    """Seconds for one micro-batch of one day of `batch_events` events written into tables that
    already hold `multiple` times that volume (as earlier days), for each multiple. The job's own
    batch writer, in one warm Spark session, is fed Kafka-shaped rows straight from the generator:
    this measures the writes, without Kafka or a JVM start in the way."""
    from shopstream.spark import iceberg
    from shopstream.spark.streaming import job
    from shopstream.spark.streaming import transforms as T

    root = workdir / "lake-growth"
    (root / "warehouse").mkdir(parents=True)
    lake_settings = lake.LakeSettings(f"jdbc:sqlite:{root / 'catalog.db'}", f"file://{root / 'warehouse'}")
    spark = iceberg.spark_session(lake_settings, "shopstream-growth-bench")
    writer = job.BatchWriter(settings.ALLOWED_LATENESS.read_int(), T.TimeWindow(), NoProgress())
    kafka_time = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    offsets, batch_ids = itertools.count(), itertools.count()
    first_day = GROWTH_START

    def write_days(days: int, with_catalog: bool = False, limit: int | None = None) -> float:
        """Generate `days` days after the last ones written (their first `limit` records), as one
        micro-batch; its seconds."""
        nonlocal first_day
        shop = Shop(
            GeneratorConfig(seed=first_day.toordinal(), start_date=first_day, days=days, events_per_day=batch_events)
        )
        first_day += dt.timedelta(days=days)
        records = itertools.chain(shop.catalog() if with_catalog else (), shop.records())
        rows = [
            (
                r.key,
                r.value,
                r.topic if r.topic == schema.TOPIC_PRODUCTS else schema.TOPIC_RAW_EVENTS,
                0,
                next(offsets),
                kafka_time,
            )
            for r in itertools.islice(records, limit)
        ]
        batch = spark.createDataFrame(rows, KAFKA_ROW).persist()
        batch.count()  # built before the clock starts: Kafka's side is not what is measured
        started = time.monotonic()
        writer(batch, next(batch_ids))
        seconds = time.monotonic() - started
        batch.unpersist()
        return seconds

    def records_in_tables() -> int:
        return spark.table(lake.table_ref(schema.BRONZE_EVENTS)).count()

    try:
        write_days(1, with_catalog=True)  # the catalog, and a first day that warms the session
        out = []
        for multiple in multiples:
            while (missing := multiple * batch_events - records_in_tables()) > 0:
                write_days(max(1, min(10, missing // batch_events)))
            before = records_in_tables()
            seconds = write_days(1, limit=batch_events)  # days differ in volume: every measured batch is the same
            out.append(
                {
                    "multiple": multiple,
                    "table_events": before,
                    "batch_events": records_in_tables() - before,
                    "batch_seconds": round(seconds, 2),
                }
            )
            print(f"growth: {out[-1]}", flush=True)
        for row in out:
            row["ratio_to_1x"] = round(row["batch_seconds"] / out[0]["batch_seconds"], 2)
        return out
    finally:
        spark.stop()


WARM_UP_SECONDS = 20  # of live events before the measured ones, and as long again for the stream to commit them


def live_generator(bootstrap: str, rate: float, seconds: int, seed: int) -> subprocess.CompletedProcess:
    """The generator in live mode: the catalog, then events stamped and sent at `rate` per second."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shopstream.events.generator",
            "--bootstrap-servers",
            bootstrap,
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--seed",
            str(seed),
            "--no-progress",
            "--late-fraction",
            "0",
            "--duplicate-fraction",
            "0",
            "--malformed-fraction",
            "0",
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def freshness(workdir: Path, seconds: int, rate: float) -> dict:
    """Seconds from an event's send to the commit of the silver snapshot that made it queryable, in
    a running stream: a warm-up run of the generator (another seed, so other event ids) goes first,
    because the first micro-batch with data after the job starts plans and compiles every write the
    first time; only the events sent after it are measured, and that first batch is reported apart."""
    broker = KafkaBroker(workdir / "kafka-fresh", port=free_port()).start()
    root = workdir / "lake-freshness"
    (root / "warehouse").mkdir(parents=True)
    job_log = workdir / "freshness-job.log"  # its step lines
    log = job_log.open("w")
    job = None
    try:
        create_topics(broker.bootstrap_servers)
        job = subprocess.Popen(
            streaming_command(
                root, broker.bootstrap_servers, "--trigger", "10 seconds", "--starting-offsets", "earliest"
            ),
            stdout=log,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(20)  # the stream started
        print(f"freshness: warm-up, {WARM_UP_SECONDS}s of live events ...", flush=True)
        live_generator(broker.bootstrap_servers, rate, WARM_UP_SECONDS, seed=1)
        time.sleep(WARM_UP_SECONDS)
        measured_from = dt.datetime.now(dt.UTC)
        print(f"freshness: live generator at {rate} events/s for {seconds}s, 10 s trigger ...", flush=True)
        generator = live_generator(broker.bootstrap_servers, rate, seconds, seed=2)
        time.sleep(30)  # the last micro-batches
    finally:
        if job is not None:
            job.terminate()
            job.wait(timeout=120)
        log.close()
        broker.stop()
    table = catalog_for(root).load_table(schema.PAGE_VIEWS.qualified)
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    seen: set[str] = set()
    lags = []
    for snap in snapshots:
        rows = (
            table.scan(snapshot_id=snap.snapshot_id, selected_fields=("event_id", "ingest_time")).to_arrow().to_pylist()
        )
        committed = dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC)
        for row in rows:
            if row["event_id"] not in seen:
                seen.add(row["event_id"])
                if row["ingest_time"] >= measured_from:
                    lags.append((committed - row["ingest_time"]).total_seconds())
    lags.sort()
    q = statistics.quantiles(lags, n=100)
    # The warm micro-batches of the measured run: what each costs sets the floor of freshness.
    progress = catalog_for(root).load_table(schema.PROGRESS.qualified).scan().to_arrow().to_pylist()
    with_rows = sorted((p for p in progress if p["num_input_rows"] > 0), key=lambda p: p["batch_id"])
    measured = [p for p in with_rows if p["progress_time"] >= measured_from]
    live = sorted(p["batch_duration_ms"] / 1000 for p in measured)
    records = [p["num_input_rows"] for p in measured]
    steps = batch_steps(job_log.read_text())
    measured_steps = [steps[p["batch_id"]] for p in measured if p["batch_id"] in steps]
    step_medians = {
        step: round(statistics.median(batch.get(step, 0.0) for batch in measured_steps), 2)
        for step in dict.fromkeys(step for batch in measured_steps for step in batch)
    }
    return {
        "events_measured": len(lags),
        "rate_events_per_s": rate,
        "trigger": "10 seconds",
        "p50_seconds": round(q[49], 1),
        "p95_seconds": round(q[94], 1),
        "max_seconds": round(lags[-1], 1),
        "lags_seconds": [round(lag, 2) for lag in lags],
        "first_micro_batch_seconds": round(with_rows[0]["batch_duration_ms"] / 1000, 2) if with_rows else None,
        "live_micro_batches": len(live),
        "records_per_micro_batch_median": statistics.median(records) if records else None,
        "micro_batch_seconds_p50": round(statistics.median(live), 2) if live else None,
        "micro_batch_seconds_max": round(live[-1], 2) if live else None,
        # Per step, over the measured micro-batches (0 where a batch had no rows for it); medians, so their
        # sum need not be the median batch's time.
        "micro_batch_step_seconds_median": step_medians,
        "generator": generator.stdout.splitlines()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to produce for the throughput run; 0 skips it"
    )
    parser.add_argument("--max-offsets-per-trigger", type=int, default=600_000)
    parser.add_argument("--freshness-seconds", type=int, default=180, help="0 skips the freshness run")
    parser.add_argument("--rate", type=float, default=100.0, help="live generator rate for the freshness run")
    parser.add_argument(
        "--growth-batch-events", type=int, default=20_000, help="events per batch of the growth run; 0 skips it"
    )
    parser.add_argument(
        "--growth-multiples", type=int, nargs="+", default=[1, 10, 30], help="table sizes, in batches, to measure at"
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shopstream-bench-") as tmp:
        os.environ["SHOPSTREAM_HOME"] = tmp
        result: dict[str, object] = {"machine_cores": os.cpu_count()}
        if args.events:
            result["throughput"] = throughput(Path(tmp), args.events, args.max_offsets_per_trigger)
        if args.growth_batch_events:
            result["growth"] = growth(Path(tmp), args.growth_batch_events, args.growth_multiples)
        if args.freshness_seconds:
            result["freshness"] = freshness(Path(tmp), args.freshness_seconds, args.rate)
    (RESULTS / ("streaming.json" if args.events else "streaming-freshness.json")).write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
