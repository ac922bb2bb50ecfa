"""`make demo`: the whole pipeline on the embedded default, from a clean state folder.

local Kafka broker -> topics -> generator (simulated days) -> streaming catch-up into bronze and
silver Iceberg tables -> row counts per table -> the daily gold jobs for each simulated day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import shutil
import subprocess
import sys
import time

from shopstream import lake, schema
from shopstream.generator import cli as generator_cli
from shopstream.generator.shop import GeneratorConfig, Shop
from shopstream.kafka_local import KafkaBroker, create_topics, free_port
from shopstream.runtime import SetupError
from shopstream.batch import customer_analytics, data_quality, product_analytics, sales_summary
from shopstream.streaming.job import STREAMING_TABLES

GOLD_JOBS = (customer_analytics.JOB, sales_summary.JOB, product_analytics.JOB, data_quality.JOB)


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def print_table_counts(settings: lake.LakeSettings, names) -> None:
    catalog = lake.iceberg_catalog(settings)
    print(f"{'table':<34}{'rows':>12}")
    for name in names:
        table = catalog.load_table(schema.TABLES[name].qualified)
        rows = table.scan().count() if table.current_snapshot() else 0
        print(f"{name:<34}{rows:>12,}")


def run(args: argparse.Namespace) -> int:
    root = lake.home()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    timings: dict[str, float] = {}

    step(f"starting a local Kafka broker (state in {root / 'kafka'})")
    started = time.monotonic()
    broker = KafkaBroker(root / "kafka", port=free_port()).start()
    timings["broker start"] = time.monotonic() - started
    try:
        create_topics(broker.bootstrap_servers)
        print(f"broker on {broker.bootstrap_servers} in {timings['broker start']:.1f}s; topics: {', '.join(schema.ALL_TOPICS)}")

        step(f"generating {args.days} day(s) of events from {args.start_date} (~{args.events_per_day:,}/day, seed {args.seed})")
        config = GeneratorConfig(seed=args.seed, start_date=args.start_date, days=args.days,
                                 events_per_day=args.events_per_day)
        shop = Shop(config)
        started = time.monotonic()
        summary = generator_cli.send(
            itertools.chain(shop.catalog(), shop.records()), broker.bootstrap_servers,
            progress_total=None, show_progress=sys.stderr.isatty(),
        )
        timings["generate"] = time.monotonic() - started
        print(summary.render(timings["generate"]))

        step("streaming catch-up: Kafka -> bronze and silver Iceberg tables")
        started = time.monotonic()
        streaming = subprocess.run([sys.executable, "-m", "shopstream", "streaming", "--trigger", "catch-up",
                                    "--bootstrap-servers", broker.bootstrap_servers])
        timings["streaming"] = time.monotonic() - started
        if streaming.returncode != 0:
            print("error: the streaming job failed (its log is above)", file=sys.stderr)
            return 1
        print_table_counts(lake.LakeSettings.from_env(), STREAMING_TABLES)
    finally:
        step("stopping the broker")
        broker.stop()

    days = [args.start_date + dt.timedelta(days=i) for i in range(args.days)]
    step(f"daily gold jobs for {', '.join(map(str, days))}")
    started = time.monotonic()
    spark = lake.spark_session(lake.LakeSettings.from_env(), "shopstream-demo-gold")
    try:
        for day in days:
            for job in GOLD_JOBS:
                result = job.run(spark, day)
                rows = ", ".join(f"{n} {c:,}" for n, c in result["rows_written"].items())
                print(f"  {day} {job.name:<30} {rows} ({result['duration_seconds']:.1f}s)")
        timings["gold"] = time.monotonic() - started
        print("\ngold_daily_sales_summary:")
        spark.table(lake.table_ref(schema.GOLD_SALES_SUMMARY)).orderBy("date").select(
            "date", "revenue", "orders", "units", "avg_order_value", "unique_buyers", "sessions", "orders_per_session",
        ).show(truncate=False)
    finally:
        spark.stop()

    step("done")
    for name, seconds in timings.items():
        print(f"  {name:<16} {seconds:7.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopstream.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1))
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--events-per-day", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
