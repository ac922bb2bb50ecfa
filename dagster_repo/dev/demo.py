"""`make demo`: the whole pipeline on the embedded default, from a clean state folder.

local Kafka broker -> topics -> generator (simulated days) -> streaming catch-up into bronze and
silver Iceberg tables -> row counts per table -> Dagster materializes every gold asset and its
checks for each simulated day (local launcher) -> the sales summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from shopstream import catalog, lake, schema, settings
from shopstream.events.broker import KafkaBroker, create_topics, free_port
from shopstream.events.generator import cli as generator_cli
from shopstream.events.generator.shop import GeneratorConfig, Shop
from shopstream.runtime import SetupError


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def print_table_counts(settings: lake.LakeSettings, names) -> None:
    catalog = lake.iceberg_catalog(settings)
    print(f"{'table':<34}{'rows':>12}")
    for name in names:
        table = catalog.load_table(schema.TABLES[name].qualified)
        rows = table.scan().count() if table.current_snapshot() else 0
        print(f"{name:<34}{rows:>12,}")


def prepare_instance() -> Path:
    """$DAGSTER_HOME for the embedded default, with the local instance settings."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("local_instance.yaml"), home / "dagster.yaml")
    return home


def materialize_gold(days: list[dt.date]) -> bool:
    """Run the silver_to_gold_processing job for each day in this process, recorded in the
    Dagster instance under $DAGSTER_HOME so `make ui` shows the same runs."""
    prepare_instance()
    from dagster_repo.definitions import defs

    job = defs.resolve_job_def("silver_to_gold_processing")
    with dg.DagsterInstance.get() as instance:
        for day in days:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            print(f"  {day}: run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'}")
            for step_stats in instance.get_run_step_stats(result.run_id):
                seconds = (step_stats.end_time or 0) - (step_stats.start_time or 0)
                status = step_stats.status.value if step_stats.status else "?"
                print(f"    {step_stats.step_key:<34} {status:<9} {seconds:6.1f}s")
            checks = [
                e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            ]
            failed = [c.check_name for c in checks if isinstance(c, dg.AssetCheckEvaluation) and not c.passed]
            print(
                f"    checks: {len(checks) - len(failed)} of {len(checks)} passed"
                + (f"; failed: {', '.join(failed)}" if failed else "")
            )
            if not result.success or failed:
                print("error: the gold run failed (its log is above)", file=sys.stderr)
                return False
    return True


def print_sales_summary(settings: lake.LakeSettings) -> None:
    table = lake.iceberg_catalog(settings).load_table(schema.TABLES[schema.GOLD_SALES_SUMMARY].qualified)
    columns = (
        "date",
        "revenue",
        "orders",
        "units",
        "avg_order_value",
        "unique_buyers",
        "sessions",
        "orders_per_session",
    )
    rows = sorted(table.scan(selected_fields=columns).to_arrow().to_pylist(), key=lambda r: r["date"])
    print("\ngold_daily_sales_summary:")
    print("".join(f"{c:>20}" for c in columns))
    for row in rows:
        print("".join(f"{row[c]!s:>20}" for c in columns))


def run(args: argparse.Namespace) -> int:
    root = settings.home()
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
        topics = ", ".join(schema.ALL_TOPICS)
        print(f"broker on {broker.bootstrap_servers} in {timings['broker start']:.1f}s; topics: {topics}")

        step(
            f"generating {args.days} day(s) of events from {args.start_date} "
            f"(~{args.events_per_day:,}/day, seed {args.seed})"
        )
        config = GeneratorConfig(
            seed=args.seed, start_date=args.start_date, days=args.days, events_per_day=args.events_per_day
        )
        shop = Shop(config)
        started = time.monotonic()
        summary = generator_cli.send(
            itertools.chain(shop.catalog(), shop.records()),
            broker.bootstrap_servers,
            progress_total=None,
            show_progress=sys.stderr.isatty(),
        )
        timings["generate"] = time.monotonic() - started
        print(summary.render(timings["generate"]))

        step("streaming catch-up: Kafka -> bronze and silver Iceberg tables")
        started = time.monotonic()
        streaming = subprocess.run(
            [
                sys.executable,
                "-m",
                "shopstream",
                "streaming",
                "--trigger",
                "catch-up",
                "--bootstrap-servers",
                broker.bootstrap_servers,
            ]
        )
        timings["streaming"] = time.monotonic() - started
        if streaming.returncode != 0:
            print("error: the streaming job failed (its log is above)", file=sys.stderr)
            return 1
        print_table_counts(lake.LakeSettings.from_env(), catalog.STREAMING.writes)
    finally:
        step("stopping the broker")
        broker.stop()

    days = [args.start_date + dt.timedelta(days=i) for i in range(args.days)]
    step(f"Dagster materializes every gold asset and check for {', '.join(map(str, days))} (local launcher)")
    started = time.monotonic()
    if not materialize_gold(days):
        return 1
    timings["gold (Dagster)"] = time.monotonic() - started
    print_sales_summary(lake.LakeSettings.from_env())

    step("done")
    for name, seconds in timings.items():
        print(f"  {name:<16} {seconds:7.1f}s")
    print("\nThe Dagster UI on the same data: make ui   (then http://127.0.0.1:3000; Ctrl-C stops it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dagster_repo.dev.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
